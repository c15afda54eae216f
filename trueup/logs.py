"""Logging for the daemon: one line per event, as text or JSON, secrets never written.

Secrets are kept out at the source (the adapters never format a password or token into a
message); :class:`RedactingFilter` is a second guard that masks the values of the secret
files the configuration names, should one ever reach a log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class RedactingFilter(logging.Filter):
    """Replaces any of ``secrets`` in a record's final message with ``***``."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            masked = msg
            for s in self.secrets:
                masked = masked.replace(s, "***")
            if masked != msg:
                record.msg, record.args = masked, None
        return True


def secret_values(*files: str | None) -> list[str]:
    """The secrets in ``files`` (the gateway's password files), whose values must never
    be logged (read only to mask them)."""
    out = []
    for file in files:
        if file:
            with contextlib.suppress(OSError):  # unreadable: then it cannot be logged either
                out.append(Path(file).read_text(encoding="utf-8").strip())
    return out


def setup_logging(fmt: str = "text", level: str = "info", secrets: list[str] | None = None
                  ) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets or []))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run
    # a job still running at its next tick is skipped by design (one plan at a time)
    logging.getLogger("apscheduler.scheduler").addFilter(
        lambda r: "maximum number of running instances" not in r.getMessage())
