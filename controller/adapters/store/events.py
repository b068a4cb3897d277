"""The event log: `<prefix>/.lego/events.jsonl`, one JSON object per line, append-only.

Every mutating admin call (renew, delete, reconcile, gc confirm) and every mutating CLI command
(`certs renew`, `certs delete`, ...) is written here with who asked (the peer address, or "cli
pid N uid U"), what and the result: `{"ts", "kind", "peer", "action", "domain", "result"}` plus
`"detail"` when there is a reason to give. Written by admin_backend.py (through the admin
server, which knows the peer) and the CLI. The controller's own decisions are written too, one
line per finished action of a reconcile pass, by `PassEvents` (a ports.PassObserver that
service.py and `reconcile` add to the reconciler's observers): kind "controller", action the
action's kind (issue, renew, apply, delete), result "issued", "renewed", "applied",
"quarantined", "failed" or "skipped", `"reason"` the plan's reason (Missing, RenewalDue, ...)
and `"detail"` its message or the error. Read back by `recent()` (`certs show`,
GET /api/v1/events, the status page).

The file is opened with O_APPEND|O_NOFOLLOW|O_NONBLOCK, mode 0600, and must be a regular file:
a symlink, FIFO or device planted at its name is refused with a StoreError naming it, never
written through. One line is one write(2) on an O_APPEND descriptor, so concurrent writers
never interleave inside a line. Past `max_bytes` (10 MiB) the file is renamed to
`events.jsonl.1` (replacing the previous one) and a new one is started. Not fsynced: losing the
last lines in a power cut is acceptable for an audit trail of operator calls; a write error
raises StoreError and the caller logs it (the call itself still happens).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from controller.adapters.store import fsutil
from controller.clock import utc_now
from controller.errors import ControllerError, StoreError
from controller.fold import Outcome
from controller.logs import log_event
from controller.model import ActionKind, Observed
from controller.paths import StorePaths
from controller.plan import Plan
from controller.status import CertStatus

FILE_NAME = "events.jsonl"
MAX_EVENTS_BYTES = 10 << 20
FILE_MODE = 0o600
_FLAGS = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
          | os.O_CLOEXEC)
_FIELD_CAP = 512  # no field makes a line long (a peer or a reason is short)


class EventLog:
    """Appends events to `.lego/events.jsonl` (see the module docstring). Thread-safe."""

    def __init__(self, paths: StorePaths, *, max_bytes: int = MAX_EVENTS_BYTES,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.path = paths.lego / FILE_NAME
        self.rotated = paths.lego / (FILE_NAME + ".1")
        self._lego = paths.lego
        self._max = max_bytes
        self._clock = clock
        self._lock = threading.Lock()

    def append(self, *, kind: str, peer: str, action: str, domain: str | None,
               result: str, detail: str | None = None,
               reason: str | None = None) -> dict[str, Any]:
        """Write one event; returns it. Raises StoreError naming the file when it cannot."""
        event: dict[str, Any] = {
            "ts": self._clock().isoformat(timespec="milliseconds"),
            "kind": kind, "peer": _cap(peer), "action": action, "domain": domain,
            "result": _cap(result),
        }
        if reason:
            event["reason"] = _cap(reason)
        if detail:
            event["detail"] = _cap(detail)
        line = orjson.dumps(event) + b"\n"
        with self._lock:
            try:
                fsutil.make_dirs(self._lego, mode=0o700)
                fd = self._open()
                try:
                    if os.fstat(fd).st_size + len(line) > self._max:
                        os.close(fd)
                        fd = -1
                        os.replace(self.path, self.rotated)
                        fd = self._open()
                    os.write(fd, line)
                finally:
                    if fd >= 0:
                        os.close(fd)
            except StoreError:
                raise
            except OSError as exc:
                raise fsutil.store_error("append to the event log", self.path, exc) from None
        return event

    def _open(self) -> int:
        try:
            fd = os.open(self.path, _FLAGS, FILE_MODE)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):  # a planted link, a FIFO
                raise StoreError(f"event log {self.path} is not a regular file; refusing to "
                                 "write to it (remove it; the controller creates one)") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"event log {self.path} is {fsutil.file_kind(st.st_mode)}, "
                                 "not a regular file; refusing to write to it")
            if st.st_mode & 0o077:
                os.fchmod(fd, FILE_MODE)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def recent(self, limit: int = 1000, *, domain: str | None = None) -> list[dict[str, Any]]:
        """The last `limit` events (oldest first), those of `domain` only when given; the
        rotated file is read too when the current one has fewer. Unparsable lines are
        skipped. Nothing written yet: []."""
        out: list[dict[str, Any]] = []
        for path in (self.path, self.rotated):
            older = [e for e in self._read(path) if domain is None or e.get("domain") == domain]
            out = older + out
            if len(out) >= limit:
                break
        return out[-limit:] if limit > 0 else []

    def _read(self, path: Path) -> list[dict[str, Any]]:
        try:
            data = fsutil.read_regular(path, limit=self._max + (1 << 20))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise fsutil.store_error("read the event log", path, exc) from None
        out: list[dict[str, Any]] = []
        for raw in data.splitlines():
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out


_RESULT = {ActionKind.ISSUE: "issued", ActionKind.RENEW: "renewed", ActionKind.APPLY: "applied",
           ActionKind.DELETE: "quarantined"}


def outcome_event(outcome: Outcome, status: CertStatus | None) -> dict[str, str]:
    """What one finished action is in the event log: action, domain, result, reason, detail."""
    a = outcome.action
    if outcome.skipped:
        result, detail = "skipped", outcome.error or "the store changed since the plan was made"
    elif outcome.ok:
        result, detail = _RESULT[a.kind], a.message
        if a.kind in (ActionKind.ISSUE, ActionKind.RENEW) and outcome.stored_fingerprint:
            served = " and served" if outcome.served_fingerprint else ""
            detail += f"; stored{served} sha256 {outcome.stored_fingerprint[:16]}…"
    else:
        result, detail = "failed", outcome.error or "unknown error"
        if status is not None and status.backoff_until is not None:
            detail += (f" (attempt {status.attempts}; next attempt after "
                       f"{status.backoff_until.isoformat()})")
    return {"action": a.kind.value, "domain": a.domain, "result": result,
            "reason": a.reason.value, "detail": detail}


class PassEvents:
    """A ports.PassObserver: one event per finished action of every pass (see the module
    docstring). A log that cannot be written is a warning, never a failed pass."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.peer = f"controller pid {os.getpid()}"

    def on_pass(self, *, plan: Plan, outcomes: list[Outcome], seconds: float,
                observed: Observed, statuses: Mapping[str, CertStatus]) -> None:
        for o in outcomes:
            event = outcome_event(o, statuses.get(o.action.domain))
            try:
                self.log.append(kind="controller", peer=self.peer, **event)
            except ControllerError as exc:
                log_event("event log not written", level=logging.WARNING,
                          action=event["action"], domain=event["domain"], error=str(exc))
                return  # one warning per pass is enough


def _cap(text: str) -> str:
    return text if len(text) <= _FIELD_CAP else text[:_FIELD_CAP] + "…"


def cli_peer() -> str:
    """Who a CLI call is: "cli pid N uid U"."""
    return f"cli pid {os.getpid()} uid {os.getuid()}"
