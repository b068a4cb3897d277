"""Structured logging: one line per decision, as text or JSON (`[log] format`), `[log] v` verbosity.

Called once by cli.py (setup_logging); every module logs through `log_event`. A final filter
refuses to print anything that looks like private key material.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

LOGGER = logging.getLogger("njcm")
_KEY_MARKERS = ("PRIVATE KEY", "certificateKey")


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        ts = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        msg = record.getMessage()
        if self.json:
            doc = {"ts": ts, "level": record.levelname.lower(), "msg": msg, **fields}
            if record.exc_info and record.exc_info[1] is not None:
                doc["error"] = repr(record.exc_info[1])
            line = orjson.dumps(doc, default=str).decode()
        else:
            kv = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
            line = f"{ts} {record.levelname:<7} {msg}" + (f" {kv}" if kv else "")
            if record.exc_info and record.exc_info[1] is not None:
                line += f" error={_text(repr(record.exc_info[1]))}"
        if any(m in line for m in _KEY_MARKERS):
            return f"{ts} ERROR   log line suppressed: it contained private key material"
        return line


def _text(v: object) -> str:
    s = str(v)
    return f'"{s}"' if (" " in s or not s) else s


def setup_logging(*, verbosity: int = 0, fmt: str = "text", stream: TextIO | None = None) -> None:
    level = logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity >= 0 else logging.WARNING
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False
    # gmqtt logs every connection at INFO; our listener reports link changes itself
    logging.getLogger("gmqtt").setLevel(logging.WARNING)


def log_event(msg: str, *, level: int = logging.INFO, **fields: Any) -> None:
    LOGGER.log(level, msg, extra={"fields": fields})
