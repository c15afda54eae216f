"""Collect row problems while reading a usage file, then raise one :class:`UsageError`.

A reader records up to :data:`MAX_PROBLEMS` problems, each as ``(where, what, fix)`` with
``where`` = ``file:line``, and raises them together; the error carries them all in its
``problems`` attribute. :func:`fail` builds the error for a single problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from optimizer.errors import UsageError

#: How many row problems are collected before the reader stops and raises.
MAX_PROBLEMS = 10


@dataclass
class Problems:
    """The problems found so far in one file (``source``), in the order found."""

    source: str
    items: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, line: int | None, what: str, fix: str) -> bool:
        """Record a problem; true when the limit is reached and reading should stop."""
        if len(self.items) >= MAX_PROBLEMS:
            return True
        where = f"{self.source}:{line}" if line is not None else self.source
        self.items.append((where, what, fix))
        return len(self.items) >= MAX_PROBLEMS

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_PROBLEMS

    def raise_if_any(self) -> None:
        if not self.items:
            return
        where, what, _ = self.items[0]
        lines = [what]
        lines += [f"  {w}: {m}" for w, m, _ in self.items[1:]]
        if self.full:
            lines.append(f"  (stopped after {MAX_PROBLEMS} problems; there may be more)")
        fixes: list[str] = []
        for _, _, f in self.items:
            if f and f not in fixes:
                fixes.append(f)
        err = UsageError("\n".join(lines), where=where, fix="; ".join(fixes))
        err.problems = list(self.items)  # type: ignore[attr-defined]
        raise err


def fail(what: str, where: str, fix: str) -> UsageError:
    """The error for one problem (``problems`` holds just it); the caller raises it."""
    err = UsageError(what, where=where, fix=fix)
    err.problems = [(where, what, fix)]  # type: ignore[attr-defined]
    return err
