"""Structured logging: one line per decision, as text or JSON (`[log] format`), `[log] v` verbosity.

Called once by cli.py (setup_logging). Controller modules log through `log_event(msg, **fields)`
(or, in adapters, a plain `logging.getLogger(__name__)`); every record of every logger, the
third-party ones (gmqtt, acme, aiohttp, urllib3, asyncio, ...) included, goes through the one
handler setup_logging installs on the root logger, so they share one format and one key filter.
Controller records (loggers `controller.*` and `njcm`) pass from the configured verbosity, the
others from WARNING. The final check suppresses a whole line (message, fields, exception and
traceback included) that looks like it holds private key material.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

LOGGER = logging.getLogger("njcm")
_OWN = ("njcm", "controller")  # logger trees that follow `[log] v`; every other tree: WARNING+
_KEY_MARKERS = ("PRIVATE KEY", "certificateKey")
_SUPPRESSED = "log line suppressed: it contained private key material"


def _own(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in _OWN)


class _Formatter(logging.Formatter):
    """ts, level, msg, logger, then the event's fields; JSON or `ts LEVEL msg k=v` text."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        line = self._render(record, ts)
        if any(m in line for m in _KEY_MARKERS):
            return self._line(ts, "ERROR", _SUPPRESSED, record.name, {}, None)
        return line

    def _render(self, record: logging.LogRecord, ts: str) -> str:
        event: dict[str, Any] | None = getattr(record, "fields", None)
        fields = dict(event or {})
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            fields["exception" if "error" in fields else "error"] = repr(exc)
        tb = "".join(traceback.format_exception(exc)).rstrip() if exc is not None else None
        if record.stack_info:
            tb = (tb + "\n" if tb else "") + record.stack_info
        # log_event lines are the controller's own events: their text shape stays as it was
        logger = None if event is not None and not self.json else record.name
        return self._line(ts, record.levelname, record.getMessage(), logger, fields, tb)

    def _line(
        self, ts: str, level: str, msg: str, logger: str | None,
        fields: dict[str, Any], tb: str | None,
    ) -> str:
        if self.json:
            doc: dict[str, Any] = {"ts": ts, "level": level.lower(), "msg": msg, "logger": logger}
            for k, v in fields.items():
                doc.setdefault(k, v)
            if tb:
                doc.setdefault("traceback", tb)
            return orjson.dumps(doc, default=str).decode()
        kv = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        line = f"{ts} {level:<7} {msg}" + (f" {kv}" if kv else "")
        if logger is not None:
            line += f" logger={logger}"
        if tb:
            line += "\n" + "\n".join("    " + t for t in tb.splitlines())
        return line


def _text(v: object) -> str:
    s = str(v)
    return f'"{s}"' if (" " in s or not s) else s


def _third_party_from_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or _own(record.name)


class _Handler(logging.StreamHandler[TextIO]):
    """The one handler. Without a given stream it writes to the current sys.stderr."""

    def __init__(self, stream: TextIO | None, fmt: str) -> None:
        super().__init__(stream or sys.stderr)
        self._follow_stderr = stream is None
        self.setFormatter(_Formatter(fmt))
        self.addFilter(_third_party_from_warning)

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr and self.stream is not sys.stderr:
            self.setStream(sys.stderr)
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # logging's default prints the record's arguments, which may hold anything: not those
        ts = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        with contextlib.suppress(Exception):  # a broken stream: nothing left to tell
            self.stream.write(f"{ts} ERROR   a log record could not be written"
                              f" logger={record.name}{self.terminator}")


def setup_logging(
    *, verbosity: int = 0, fmt: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Install (or replace: calling it again never duplicates lines) the one handler; return it."""
    level = logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity >= 0 else logging.WARNING
    handler = _Handler(stream, fmt)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    for own in _OWN:
        logger = logging.getLogger(own)
        logger.handlers[:] = [h for h in logger.handlers if not isinstance(h, _Handler)]
        logger.setLevel(level)
        logger.propagate = True
    root.addHandler(handler)
    # gmqtt logs every connection at INFO; our listener reports link changes itself
    logging.getLogger("gmqtt").setLevel(logging.WARNING)
    return handler


def reset_logging() -> None:
    """Remove the handler setup_logging installed (tests call this when done)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    for own in _OWN:
        logging.getLogger(own).setLevel(logging.NOTSET)


def log_event(msg: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields, under the calling controller module's logger name."""
    caller = sys._getframe(1).f_globals.get("__name__", "")
    logger = logging.getLogger(caller) if _own(caller) else LOGGER
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields}, stacklevel=2)
