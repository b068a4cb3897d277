"""The deletion guard's release in the fleet database (ports.GcConfirmations): the one row of
`gc_confirm`, with the same JSON body as `.lego/gc-confirm.json` (adapters/store/gcconfirm.py).

In fleet mode an operator's `gc confirm` on any node releases the guard of the fleet. `load`
returns the release, None when there is none or it cannot be used (a body that is not a
confirmation, an unreachable database): logged once per distinct problem, never raised, so the
guard keeps holding. `save` replaces the row; `consume(release)` deletes it in one transaction
if it still is `release` (not a newer one). Both raise the database's errors (ControllerError).
Holds no key material. Built by app.py in fleet mode; used by reconcile.py, admin_backend.py
and cli.py.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import ValidationError

from controller.adapters.pg.db import Database
from controller.adapters.store.gcconfirm import ConfirmDoc
from controller.errors import ConfigError, ControllerError
from controller.logs import log_event
from controller.paths import validate_store_key
from controller.policy import GcRelease


class PgGcConfirmations:
    """`gc_confirm` in `db` (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._last_problem: str | None = None

    def load(self) -> GcRelease | None:
        try:
            with self.db.tx() as conn:
                row = conn.execute("SELECT body FROM gc_confirm WHERE id = 1").fetchone()
        except ControllerError as exc:
            self._unusable(f"the gc confirmation cannot be read: {exc}")
            return None
        if row is None:
            self._last_problem = None
            return None
        release = self._release(row[0])
        if release is not None:
            self._last_problem = None
        return release

    def _release(self, body: Any) -> GcRelease | None:
        try:
            doc = ConfirmDoc.model_validate(body)
            names = frozenset(validate_store_key(n) for n in doc.names)
        except (ValidationError, ConfigError) as exc:
            count = exc.error_count() if isinstance(exc, ValidationError) else 1
            self._unusable(f"the fleet database's gc_confirm row is not a gc confirmation "
                           f"({count} errors)")
            return None
        return GcRelease(names=names, confirmed_at=doc.confirmed_at, by=doc.by)

    def _unusable(self, problem: str) -> None:
        if problem != self._last_problem:
            log_event("gc confirmation ignored; the deletion guard keeps holding",
                      level=logging.ERROR, database=self.db.shown, error=problem)
            self._last_problem = problem

    def save(self, release: GcRelease, *, stored: int = 0) -> None:
        doc = ConfirmDoc(names=sorted(release.names), count=len(release.names), stored=stored,
                         confirmed_at=release.confirmed_at, by=release.by)
        with self.db.tx() as conn:
            conn.execute("INSERT INTO gc_confirm (id, body) VALUES (1, %s) "
                         "ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
                         (Jsonb(doc.model_dump(mode="json")),))

    def consume(self, release: GcRelease) -> bool:
        with self.db.tx() as conn:
            row = conn.execute("SELECT body FROM gc_confirm WHERE id = 1 FOR UPDATE").fetchone()
            if row is None or self._release(row[0]) != release:
                return False
            conn.execute("DELETE FROM gc_confirm WHERE id = 1")
        return True
