"""The rate-limit ledger of one CA in the fleet database (ports.RateLedger), shared by the nodes.

In fleet mode every node orders against the same ACME accounts and budgets, so the events the
CA counts (policies/ratelimits.py: orders, failed validations, rateLimited answers) live in the
`ledger` table: one row per event (`ca` = the CA's directory URL, `at`, the event as JSON in
the field names of the file ledger, adapters/store/ledger.py). `record` inserts one and prunes
this CA's events older than the longest window whose Retry-After (if any) is over; a database
error is raised (ControllerError: the executor logs it). `snapshot(now)` reads the events still
counted at `now`, oldest first, and never raises: an unreachable database or an unreadable row
is logged (once per distinct problem) and read as empty / left out. Holds no key material.
Built by app.py in fleet mode; the executor records (worker thread), the reconciler snapshots.
Thread-safe (no state but the last problem logged).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import TypeAdapter, ValidationError

from controller.adapters.pg.db import Database
from controller.errors import ControllerError
from controller.logs import log_event
from controller.policies.ratelimits import LONGEST_WINDOW, LedgerEvent, LedgerSnapshot

_EVENT = TypeAdapter(LedgerEvent)

_PRUNE = """
DELETE FROM ledger WHERE ca = %(ca)s AND at <= %(horizon)s
  AND (event->>'until' IS NULL OR (event->>'until')::timestamptz <= %(now)s)
"""
_READ = """
SELECT event FROM ledger WHERE ca = %(ca)s
  AND (at > %(horizon)s OR (event->>'until' IS NOT NULL
                            AND (event->>'until')::timestamptz > %(now)s))
ORDER BY at, id
"""


def _alive(event: LedgerEvent, now: datetime) -> bool:
    return event.at > now - LONGEST_WINDOW or (event.until is not None and event.until > now)


class PgLedger:
    """The ledger of the CA at `ca` (its directory URL) in `db`; see the module docstring."""

    def __init__(self, db: Database, ca: str) -> None:
        self.db = db
        self.ca = ca
        self._lock = threading.Lock()
        self._last_problem: str | None = None

    def record(self, event: LedgerEvent) -> None:
        if event.ca != self.ca:
            raise ValueError(f"the ledger of {self.ca} cannot record an event of {event.ca}")
        body = _EVENT.dump_python(event, mode="json")
        with self.db.tx() as conn:
            conn.execute("INSERT INTO ledger (ca, at, event) VALUES (%s, %s, %s)",
                         (self.ca, event.at, Jsonb(body)))
            conn.execute(_PRUNE, {"ca": self.ca, "horizon": event.at - LONGEST_WINDOW,
                                  "now": event.at})

    def snapshot(self, now: datetime) -> LedgerSnapshot:
        try:
            with self.db.tx() as conn:
                rows = conn.execute(_READ, {"ca": self.ca, "horizon": now - LONGEST_WINDOW,
                                            "now": now}).fetchall()
        except ControllerError as exc:
            self._problem(f"the fleet ledger cannot be read: {exc}")
            return LedgerSnapshot(self.ca, now, ())
        events = []
        bad = 0
        for (body,) in rows:
            event = self._event(body)
            if event is None:
                bad += 1
            elif event.ca == self.ca and _alive(event, now):
                events.append(event)
        if bad:
            self._problem(f"{bad} ledger rows of {self.ca} are not ledger events; left out")
        else:
            with self._lock:
                self._last_problem = None
        return LedgerSnapshot(self.ca, now, tuple(events))

    @staticmethod
    def _event(body: Any) -> LedgerEvent | None:
        try:
            return _EVENT.validate_python(body)
        except ValidationError:
            return None

    def _problem(self, problem: str) -> None:
        with self._lock:
            if problem == self._last_problem:
                return
            self._last_problem = problem
        log_event("rate-limit ledger unusable; counting from what is readable",
                  level=logging.ERROR, ca=self.ca, error=problem)
