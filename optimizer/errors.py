"""Errors for bad input: each says what is wrong, where, and how to fix it."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from a file or a user.

    Attributes:
        what: what is wrong, in one sentence.
        where: the file and the line or key (``"tariff.toml: import_rates.summer"``).
        fix: how to fix it, in one sentence.
    """

    def __init__(self, what: str, *, where: str = "", fix: str = "") -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [f"{self.where}: {self.what}" if self.where else self.what]
        if self.fix:
            parts.append(f"  fix: {self.fix}")
        return "\n".join(parts)


class TariffError(InputError):
    """A tariff file is invalid."""


class UsageError(InputError):
    """Interval (usage) data is invalid."""
