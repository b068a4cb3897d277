"""Per-certificate leases in the fleet database: which node may order (and store) a certificate.

Used by the executor through `hold(key)` around an order, and by certs.FleetCertStore.put,
whose fenced write checks `held(key)` and the leases row in the same transaction. `certs`
(the CLI) lists `holders()`.

A lease is the `leases` row of a store key: owner (node name), generation, expires_at. Times
are the database's (`now()`), never a node's clock.
- `acquire` is one upsert: it takes the row when there is none, when it has expired, or when
  this node owns it already (a restarted node takes its own lease back); every take bumps
  `generation`, so a write fenced by an older generation is refused even on the same node.
  Another node's unexpired lease raises LeaseBusy (a TemporaryError with `retry_after`).
- `renew` extends a lease while owner and generation are still ours (None: lost). An expired
  lease nobody took is renewed too: the generation proves nobody wrote in between.
- `release` expires the lease now, only while it is still ours (same generation).
- `hold(key)` (async) acquires in a worker thread, tracks the lease as held by this process,
  renews it every duration/3 and, when a renewal finds it lost, logs "lease lost" and stops
  tracking it, so a later fenced write refuses. On exit: stop renewing, release, forget.
  One process holds a key once: a second `hold` of a key it holds raises LeaseBusy (taking it
  again would bump the generation under the first holder's feet).
The sync methods run in worker threads (asyncio.to_thread); the in-memory tracking is locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from controller.adapters.pg.db import Database
from controller.errors import ControllerError, TemporaryError
from controller.faultpoints import fault_point, register
from controller.logs import log_event

FAULT_POINTS = register("lease.after_acquire")

_ACQUIRE = """
INSERT INTO leases AS l (key, owner, generation, expires_at, taken_at)
VALUES (%(key)s, %(node)s, 1, now() + %(duration)s, now())
ON CONFLICT (key) DO UPDATE
  SET owner = EXCLUDED.owner, generation = l.generation + 1,
      expires_at = EXCLUDED.expires_at, taken_at = EXCLUDED.taken_at
  WHERE l.expires_at <= now() OR l.owner = EXCLUDED.owner
RETURNING generation, expires_at
"""


@dataclass(frozen=True)
class Lease:
    """A lease this node took: the store key, the generation it took, when it expires (UTC)."""

    key: str
    generation: int
    expires_at: datetime


@dataclass(frozen=True)
class LeaseRow:
    """One row of `leases` as `certs` shows it; `live`: not expired by the database's clock."""

    key: str
    owner: str
    generation: int
    expires_at: datetime
    live: bool


class LeaseBusy(TemporaryError):
    """Another node holds an unexpired lease on the key (or this process holds it already)."""

    def __init__(self, key: str, holder: str, until: datetime, seconds_left: float) -> None:
        super().__init__(
            f"the lease on {key} is held by {holder} until {until.isoformat()}",
            retry_after=float(max(1, math.ceil(seconds_left))),
        )
        self.key = key
        self.holder = holder
        self.until = until


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class Leases:
    """The leases of node `node`, each taken for `duration` (see the module docstring)."""

    def __init__(self, db: Database, node: str, duration: timedelta) -> None:
        if duration <= timedelta(0):
            raise ValueError("a lease duration must be positive")
        self.db = db
        self.node = node
        self.duration = duration
        self._lock = threading.Lock()
        self._held: dict[str, Lease] = {}
        self._taking: set[str] = set()

    # -- the rows (worker threads) ------------------------------------------------------------

    def acquire(self, key: str) -> Lease:
        """Take the lease on `key` (see the module docstring); LeaseBusy when another node's
        lease on it has not expired."""
        with self.db.tx() as conn:
            params = {"key": key, "node": self.node, "duration": self.duration}
            row = conn.execute(_ACQUIRE, params).fetchone()
            if row is not None:
                return Lease(key, int(row[0]), _utc(row[1]))
            # The upsert locked the row it did not take: read who holds it.
            busy = conn.execute(
                "SELECT owner, expires_at, extract(epoch FROM expires_at - now()) "
                "FROM leases WHERE key = %s", (key,)).fetchone()
        if busy is None:  # cannot happen: the conflicting row is locked until we commit
            raise TemporaryError(f"the lease on {key} could not be taken; retry")
        raise LeaseBusy(key, str(busy[0]), _utc(busy[1]), float(busy[2]))

    def renew(self, lease: Lease) -> Lease | None:
        """`lease` extended by `duration` from now; None when it was lost (another node, or
        another take by this one, changed owner or generation)."""
        with self.db.tx() as conn:
            row = conn.execute(
                "UPDATE leases SET expires_at = now() + %s "
                "WHERE key = %s AND owner = %s AND generation = %s RETURNING expires_at",
                (self.duration, lease.key, self.node, lease.generation)).fetchone()
        if row is None:
            return None
        renewed = Lease(lease.key, lease.generation, _utc(row[0]))
        with self._lock:
            current = self._held.get(lease.key)
            if current is not None and current.generation == lease.generation:
                self._held[lease.key] = renewed
        return renewed

    def release(self, lease: Lease) -> bool:
        """Expire `lease` now if it is still ours; True if it was. It is no longer held."""
        self._forget(lease)
        with self.db.tx() as conn:
            cur = conn.execute(
                "UPDATE leases SET expires_at = now() WHERE key = %s AND owner = %s "
                "AND generation = %s AND expires_at > now()",
                (lease.key, self.node, lease.generation))
            return cur.rowcount > 0

    def holders(self) -> list[LeaseRow]:
        """Every lease row, by key; `live` by the database's clock."""
        with self.db.tx() as conn:
            rows = conn.execute(
                "SELECT key, owner, generation, expires_at, expires_at > now() "
                "FROM leases ORDER BY key").fetchall()
        return [LeaseRow(str(r[0]), str(r[1]), int(r[2]), _utc(r[3]), bool(r[4])) for r in rows]

    # -- what this process holds -------------------------------------------------------------

    def held_keys(self) -> list[str]:
        """The keys whose lease this process holds right now (an order is running)."""
        with self._lock:
            return sorted(self._held)

    def held(self, key: str) -> Lease | None:
        """The lease this process holds on `key` right now (None: none, or it was lost)."""
        with self._lock:
            return self._held.get(key)

    def _forget(self, lease: Lease) -> None:
        with self._lock:
            current = self._held.get(lease.key)
            if current is not None and current.generation == lease.generation:
                del self._held[lease.key]

    def _reserve(self, key: str) -> None:
        with self._lock:
            current = self._held.get(key)
            if current is not None or key in self._taking:
                until = current.expires_at if current is not None else datetime.now(UTC)
                left = (until - datetime.now(UTC)).total_seconds()
                raise LeaseBusy(key, f"{self.node} (this process)", until, left)
            self._taking.add(key)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[Lease]:
        """Hold the lease on `key` for the block (see the module docstring)."""
        self._reserve(key)
        try:
            lease = await self._take(key)
            fault_point("lease.after_acquire")
            with self._lock:
                self._held[key] = lease
        finally:
            with self._lock:
                self._taking.discard(key)
        renewer = asyncio.create_task(self._keep(lease), name=f"lease renewal {key}")
        try:
            yield lease
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            current = self.held(key)
            self._forget(lease)
            try:
                await asyncio.to_thread(self.release, current or lease)
            except ControllerError as exc:
                log_event("lease not released; it expires by itself", level=logging.WARNING,
                          key=key, generation=lease.generation, error=str(exc))

    async def _take(self, key: str) -> Lease:
        """acquire() in a worker thread; cancelled meanwhile, a lease it took is given back."""
        work = asyncio.ensure_future(asyncio.to_thread(self.acquire, key))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait([work])
            if not work.cancelled() and work.exception() is None:
                with contextlib.suppress(ControllerError):
                    await asyncio.to_thread(self.release, work.result())
            raise

    async def _keep(self, lease: Lease) -> None:
        """Renew every duration/3 until cancelled or lost."""
        interval = self.duration.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await asyncio.to_thread(self.renew, lease)
            except ControllerError as exc:
                log_event("lease not renewed; retrying", level=logging.WARNING,
                          key=lease.key, generation=lease.generation, error=str(exc))
                continue
            if renewed is None:
                self._forget(lease)
                log_event("lease lost", level=logging.WARNING, key=lease.key,
                          generation=lease.generation)
                return
