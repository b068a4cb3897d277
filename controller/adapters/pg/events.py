"""The fleet's event log: every node's decisions and outcomes in the append-only `events` table.

A ports.PassObserver that app.py adds to the reconciler's observers in fleet mode (next to, or
instead of, adapters/store/events.py's PassEvents); read back by `recent()` (`certs show`, GET
/api/v1/events, the status page) across the fleet.

Per pass, one row per planned action (kind "decision": action, reason, message) and one per
finished action (kind "outcome": action, reason, result ok / failed / skipped, error, and the
stored / served fingerprint or the next attempt), each with the node and the store key, all in
one INSERT batch. A pass with nothing to say writes nothing. `on_pass` never blocks the event
loop and never raises: batches go to one writer thread through a bounded queue; a database
that is away is logged once per outage (with the error) and its batches are dropped (counted:
the recovery is logged with how many rows were lost), like an overflowing queue's.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

import orjson

from controller.adapters.pg.db import Database
from controller.errors import ControllerError
from controller.fold import Outcome
from controller.logs import log_event
from controller.model import Observed
from controller.plan import Plan
from controller.status import CertStatus

_FIELD_CAP = 512
MAX_QUEUED_BATCHES = 256

Row = tuple[str, str | None, dict[str, Any]]  # kind, key, detail


def _cap(text: str) -> str:
    return text if len(text) <= _FIELD_CAP else text[:_FIELD_CAP] + "…"


def pass_rows(plan: Plan, outcomes: list[Outcome],
              statuses: Mapping[str, CertStatus]) -> list[Row]:
    """The rows one pass adds: its decisions, then its outcomes. Pure."""
    rows: list[Row] = []
    for a in plan.actions:
        rows.append(("decision", a.domain, {"action": a.kind.value, "reason": a.reason.value,
                                            "message": _cap(a.message)}))
    for o in outcomes:
        a = o.action
        detail: dict[str, Any] = {"action": a.kind.value, "reason": a.reason.value}
        if o.skipped:
            detail["result"] = "skipped"
            detail["error"] = _cap(o.error or "the store changed since the plan was made")
        elif o.ok:
            detail["result"] = "ok"
            if o.stored_fingerprint:
                detail["stored"] = o.stored_fingerprint
            if o.served_fingerprint:
                detail["served"] = o.served_fingerprint
        else:
            detail["result"] = "failed"
            detail["error"] = _cap(o.error or "unknown error")
            status = statuses.get(a.domain)
            if status is not None and status.backoff_until is not None:
                detail["attempt"] = status.attempts
                detail["next_attempt"] = status.backoff_until.isoformat()
        rows.append(("outcome", a.domain, detail))
    return rows


class PgEventLog:
    """See the module docstring."""

    def __init__(self, db: Database, node: str) -> None:
        self.db = db
        self.node = node
        self._queue: queue.Queue[list[Row] | None] = queue.Queue(MAX_QUEUED_BATCHES)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._idle = threading.Condition()
        self._pending = 0  # batches queued or being written
        self._down = False  # an outage was logged
        self.lost = 0  # rows dropped since the last outage was logged
        self.written = 0  # rows written (metrics, tests)

    # -- ports.PassObserver --------------------------------------------------------------------

    def on_pass(self, *, plan: Plan, outcomes: list[Outcome], seconds: float,
                observed: Observed, statuses: Mapping[str, CertStatus]) -> None:
        try:
            rows = pass_rows(plan, outcomes, statuses)
            if rows:
                self._enqueue(rows)
        except Exception as exc:  # an observer never fails the pass
            log_event("fleet event log: pass not recorded", level=logging.WARNING,
                      error=f"{type(exc).__name__}: {exc}")

    def _enqueue(self, rows: list[Row]) -> None:
        self._ensure_thread()
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(rows)
        except queue.Full:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()
            self._lose(len(rows), "the writer is behind (queue full)")

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pg-event-log",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                self._write(batch)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _write(self, batch: list[Row]) -> None:
        try:
            with self.db.tx() as conn, conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO events (node, kind, key, detail) VALUES (%s, %s, %s, %s::jsonb)",
                    [(self.node, kind, key, orjson.dumps(detail).decode())
                     for kind, key, detail in batch])
        except Exception as exc:  # never raises; logged once per outage
            why = str(exc) if isinstance(exc, ControllerError) else f"{type(exc).__name__}: {exc}"
            self._lose(len(batch), why)
            return
        self.written += len(batch)
        if self._down:
            log_event("fleet event log written again", lost_rows=self.lost,
                      database=self.db.shown)
            self._down = False
            self.lost = 0

    def _lose(self, rows: int, why: str) -> None:
        self.lost += rows
        if not self._down:
            self._down = True
            log_event("fleet event log not written; events are dropped until it can be",
                      level=logging.WARNING, error=why, database=self.db.shown)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued batch was written or dropped; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to `timeout`) and stop the writer thread."""
        thread = self._thread
        if thread is None:
            return
        self.flush(timeout)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            return
        thread.join(timeout)

    # -- reading ---------------------------------------------------------------------------------

    def recent(self, limit: int = 100, *, domain: str | None = None) -> list[dict[str, Any]]:
        """The last `limit` events of the fleet (oldest first), of `domain` (a store key) only
        when given: {"id", "ts", "node", "kind", "domain", **detail}. Raises db.py's errors."""
        if limit <= 0:
            return []
        with self.db.tx() as conn:
            rows = conn.execute(
                "SELECT id, at, node, kind, key, detail FROM events "
                "WHERE %(key)s::text IS NULL OR key = %(key)s ORDER BY id DESC LIMIT %(n)s",
                {"key": domain, "n": limit}).fetchall()
        out: list[dict[str, Any]] = []
        for id_, at, node, kind, key, detail in reversed(rows):
            event: dict[str, Any] = {"id": id_, "ts": at.isoformat(timespec="milliseconds"),
                                     "node": node, "kind": kind, "domain": key}
            if isinstance(detail, dict):
                event.update({k: v for k, v in detail.items() if k not in event})
            out.append(event)
        return out
