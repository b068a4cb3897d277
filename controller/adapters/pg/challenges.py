"""Fleet challenges: every node answers http-01 and tls-alpn-01 for an order any node runs.

Built by app.py in fleet mode (one `FleetChallengeSolver` per local http-01 / tls-alpn-01
solver, handed to the ACME issuer in place of the local one; one `ChallengeRelay` per node, run
as a task and woken by the node's LISTEN dispatcher on `njcm_challenge`). dns-01 is not
relayed: its TXT records are global already.

- `FleetChallengeSolver(local, db, node, live_nodes)` is a ports.ChallengeSolver. present():
  the local solver presents first; then, in one transaction, the `challenges` row (owner = this
  node, expires_at = now() + lifetime, DB clock) and NOTIFY njcm_challenge <token>; then it
  waits (polling `challenge_acks`, at most `ack_timeout`) until every other node in
  `live_nodes()` acknowledged the token. Nodes that never do are named in a warning and
  present returns anyway: the CA may still pick a node that answers. A failed database write
  undoes the local presentation and raises the database's error (TemporaryError when it is
  away, ConfigError for a wrong DSN). cleanup() deletes the row and its acks (+ NOTIFY), then
  cleans up locally; it never raises. `live_nodes` is called on the event loop every poll: it
  must be cheap (a cached view such as the node registry's last heartbeat read).
  It is a ports.LeftoverCleaner: remove_leftovers() deletes the rows a previous run of this
  node left (it died during an order) and passes on the local solver's leftovers (NJet's).
- `ChallengeRelay(db, node, local_for)` runs on every node: on each wake() and every `poll`
  seconds it reads the unexpired challenge rows of other nodes, presents each new one through
  this node's own (unwrapped) solver for its type and writes its ack; a row that disappeared
  (the owner cleaned up) or expired (the owner died) is cleaned up locally. A type without a
  local solver is logged once and never acked (the owner's warning names this node). Errors
  are logged and retried on the next tick; while the database is away what is presented stays
  presented until the row's expiry (measured on this node's monotonic clock).

Consequence: every node's own http-01 server, its NJet challenge location (when the local
http-01 solver is a NjetProxyHttp01Solver, presenting adds the location to this node's NJet)
and its tls-alpn-01 server answer any fleet order while it is pending, so the CA may validate
through whichever node DNS or a load balancer sends it to. The listeners (and locations) exist
exactly while some fleet order is pending (the local solvers' reference counts are shared by
this node's own orders and the relayed ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from controller.adapters.pg.db import Database
from controller.errors import ControllerError, StoreUnavailable
from controller.logs import log_event
from controller.ports import ChallengeSolver, LeftoverCleaner

CHANNEL = "njcm_challenge"
ACK_POLL_SECONDS = 0.15
INSERT_PATIENCE = 8.0  # seconds a challenge row is retried while the database is away


class FleetChallengeSolver:
    """A local http-01 / tls-alpn-01 solver whose challenges every live node answers."""

    def __init__(self, local: ChallengeSolver, db: Database, node: str,
                 live_nodes: Callable[[], Sequence[str]], *, ack_timeout: float = 10.0,
                 lifetime: timedelta = timedelta(minutes=10),
                 node_timeout: timedelta | None = None) -> None:
        self.local = local
        # set (fleet.py): every poll reads which nodes are live now (the database's clock), so
        # a node that came up since `live_nodes` was last refreshed is waited for too
        self._node_timeout = node_timeout
        self.challenge_type: str = local.challenge_type
        self._db = db
        self._node = node
        self._live_nodes = live_nodes
        self._ack_timeout = ack_timeout
        self._lifetime = lifetime

    async def present(self, domain: str, token: str, key_authorization: str) -> None:
        await self.local.present(domain, token, key_authorization)
        try:
            await self._insert_retrying(domain, token, key_authorization)
        except ControllerError:
            await self._local_cleanup(domain, token, key_authorization)  # nothing committed
            raise
        except BaseException:
            await self._undo(domain, token, key_authorization)  # cancelled: it may have been
            raise
        try:
            await self._await_acks(domain, token)
        except BaseException:
            await self.cleanup(domain, token, key_authorization)
            raise

    async def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        try:
            await asyncio.to_thread(self._delete, token)
        except Exception as exc:
            log_event("fleet challenge row not removed (it expires on its own)",
                      level=logging.WARNING, domain=domain, type=self.challenge_type,
                      error=str(exc))
        await self._local_cleanup(domain, token, key_authorization)

    async def close(self) -> None:
        await self.local.close()

    async def remove_leftovers(self) -> list[str]:
        """The rows a previous run of this node left (it died during an order), and what the
        local solver left (ports.LeftoverCleaner; called once at start-up)."""
        lines: list[str] = []
        if isinstance(self.local, LeftoverCleaner):
            lines.extend(await self.local.remove_leftovers())
        for domain in await asyncio.to_thread(self._delete_own_rows):
            lines.append(f"fleet {self.challenge_type} challenge for {domain}")
        return lines

    # -- helpers -----------------------------------------------------------------------------

    async def _insert_retrying(self, domain: str, token: str, key_authorization: str) -> None:
        """The row, retried for a few seconds while the database is away (a restart takes
        about a second): the CA already placed the order, and abandoning it costs one."""
        delay, waited = 0.25, 0.0
        while True:
            try:
                await asyncio.to_thread(self._insert, domain, token, key_authorization)
                return
            except StoreUnavailable:
                if waited >= INSERT_PATIENCE:
                    raise
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 2.0)

    async def _undo(self, domain: str, token: str, key_authorization: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._delete, token)
        await self._local_cleanup(domain, token, key_authorization)

    async def _local_cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        try:
            await self.local.cleanup(domain, token, key_authorization)
        except Exception as exc:  # the contract says it never raises; be sure
            log_event("local challenge cleanup failed", level=logging.ERROR, domain=domain,
                      type=self.challenge_type, error=repr(exc))

    def _others(self) -> set[str]:
        try:
            return {n for n in self._live_nodes() if n != self._node}
        except Exception as exc:
            log_event("live nodes unknown; not waiting for challenge acks",
                      level=logging.WARNING, error=repr(exc))
            return set()

    async def _await_acks(self, domain: str, token: str) -> None:
        started = time.monotonic()
        deadline = started + self._ack_timeout
        # with node_timeout the first poll says who is live: always ask at least once
        missing = self._others() if self._node_timeout is None else {"(not asked yet)"}
        db_error: str | None = None
        while missing:
            try:
                acked, live = await asyncio.to_thread(self._acks, token)
                db_error = None
            except ControllerError as exc:
                if db_error is None:
                    log_event("challenge acks cannot be read; still waiting",
                              level=logging.WARNING, domain=domain, error=str(exc))
                db_error = str(exc)
                acked, live = set(), None
            others = self._others() if live is None else live - {self._node}
            missing = others - acked
            if not missing or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(ACK_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        if missing:
            log_event("challenge not confirmed by every node", level=logging.WARNING,
                      domain=domain, type=self.challenge_type, missing=sorted(missing),
                      waited=round(time.monotonic() - started, 2))
        else:
            log_event("fleet challenge presented", level=logging.DEBUG, domain=domain,
                      type=self.challenge_type, waited=round(time.monotonic() - started, 2))

    # -- database (worker threads) -----------------------------------------------------------

    def _insert(self, domain: str, token: str, key_authorization: str) -> None:
        with self._db.tx() as conn:
            # The same token again (an authorization reused by the CA): the latest presenter
            # owns the row, so the first one's cleanup leaves it to the second.
            conn.execute(
                "INSERT INTO challenges (token, type, domain, key_authorization, owner,"
                " expires_at) VALUES (%s, %s, %s, %s, %s, now() + %s)"
                " ON CONFLICT (token) DO UPDATE SET type = EXCLUDED.type,"
                " domain = EXCLUDED.domain, key_authorization = EXCLUDED.key_authorization,"
                " owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at",
                (token, self.challenge_type, domain, key_authorization, self._node,
                 self._lifetime))
            Database.notify(conn, CHANNEL, token)

    def _acks(self, token: str) -> tuple[set[str], set[str] | None]:
        """The nodes that acked `token`, and (with node_timeout) the nodes live right now."""
        with self._db.tx() as conn:
            rows = conn.execute("SELECT node FROM challenge_acks WHERE token = %s",
                                (token,)).fetchall()
            live = None if self._node_timeout is None else {str(r[0]) for r in conn.execute(
                "SELECT name FROM nodes WHERE heartbeat_at > now() - %s",
                (self._node_timeout,)).fetchall()}
        return {str(r[0]) for r in rows}, live

    def _delete(self, token: str) -> None:
        with self._db.tx() as conn:
            gone = conn.execute("DELETE FROM challenges WHERE token = %s AND owner = %s"
                                " RETURNING token", (token, self._node)).fetchall()
            if gone:
                conn.execute("DELETE FROM challenge_acks WHERE token = %s", (token,))
                Database.notify(conn, CHANNEL, token)

    def _delete_own_rows(self) -> list[str]:
        with self._db.tx() as conn:
            rows = conn.execute("DELETE FROM challenges WHERE owner = %s AND type = %s"
                                " RETURNING token, domain",
                                (self._node, self.challenge_type)).fetchall()
            for token, _ in rows:
                conn.execute("DELETE FROM challenge_acks WHERE token = %s", (token,))
                Database.notify(conn, CHANNEL, str(token))
        return sorted(str(r[1]) for r in rows)


@dataclass(frozen=True)
class _Row:
    type: str
    domain: str
    key_authorization: str


@dataclass
class _Presented:
    row: _Row
    solver: ChallengeSolver
    deadline: float  # monotonic: the row's expiry as seen when it was last read
    acked: bool = False


class ChallengeRelay:
    """Presents the other nodes' pending challenges through this node's own solvers."""

    def __init__(self, db: Database, node: str,
                 local_for: Callable[[str], ChallengeSolver | None], *,
                 poll: float = 5.0) -> None:
        self._db = db
        self._node = node
        self._local_for = local_for
        self._poll = poll
        self._wake = asyncio.Event()
        self._presented: dict[str, _Presented] = {}
        self._unsolvable: set[str] = set()  # types logged as having no local solver
        self._failed: set[str] = set()      # tokens whose present failure was logged
        self._db_ok = True

    def wake(self) -> None:
        """Rescan now (the LISTEN dispatcher calls this on the loop for njcm_challenge)."""
        self._wake.set()

    def presented(self) -> set[str]:
        return set(self._presented)

    async def run(self) -> None:
        """Relay until cancelled; close() cleans up what is presented."""
        while True:
            self._wake.clear()
            try:
                await self.sync()
            except Exception as exc:
                log_event("fleet challenge relay pass failed", level=logging.ERROR,
                          error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def close(self) -> None:
        for token in list(self._presented):
            await self._drop(token)

    async def sync(self) -> None:
        """One pass: present what is new, ack it, clean up what is gone or expired."""
        try:
            rows = await asyncio.to_thread(self._read)
        except ControllerError as exc:
            if self._db_ok:
                log_event("fleet challenge relay cannot read the database; retrying",
                          level=logging.WARNING, error=str(exc))
            self._db_ok = False
            now = time.monotonic()
            for token in [t for t, p in self._presented.items() if p.deadline <= now]:
                await self._drop(token)
            return
        if not self._db_ok:
            log_event("fleet challenge relay reaches the database again")
            self._db_ok = True
        now = time.monotonic()
        for token in list(self._presented):
            seen = rows.get(token)
            if seen is None or seen[0] != self._presented[token].row:
                await self._drop(token, forget_ack=True)
        self._failed &= set(rows)
        fresh = [(t, row) for t, (row, _) in rows.items() if t not in self._presented]
        await asyncio.gather(*(self._present(t, row, now + rows[t][1]) for t, row in fresh))
        for token, (_, left) in rows.items():
            if token in self._presented:
                self._presented[token].deadline = now + left
        await self._ack_pending()

    # -- helpers -----------------------------------------------------------------------------

    async def _present(self, token: str, row: _Row, deadline: float) -> None:
        solver = self._local_for(row.type)
        if solver is None:
            if row.type not in self._unsolvable:
                self._unsolvable.add(row.type)
                log_event("fleet challenges of this type are not answered here: no local"
                          " solver is configured", level=logging.WARNING, type=row.type)
            return
        try:
            await solver.present(row.domain, token, row.key_authorization)
        except Exception as exc:
            level = logging.DEBUG if token in self._failed else logging.WARNING
            self._failed.add(token)
            log_event("fleet challenge not presented here; retrying", level=level,
                      domain=row.domain, type=row.type, error=str(exc))
            return
        self._failed.discard(token)
        self._presented[token] = _Presented(row, solver, deadline)
        log_event("fleet challenge presented for another node", level=logging.DEBUG,
                  domain=row.domain, type=row.type)

    async def _ack_pending(self) -> None:
        pending = [t for t, p in self._presented.items() if not p.acked]
        if not pending:
            return
        try:
            await asyncio.to_thread(self._ack, pending)
        except ControllerError as exc:
            log_event("fleet challenge acks not written; retrying", level=logging.WARNING,
                      error=str(exc))
            return
        for token in pending:
            self._presented[token].acked = True

    async def _drop(self, token: str, *, forget_ack: bool = False) -> None:
        entry = self._presented.pop(token)
        self._failed.discard(token)
        try:
            await entry.solver.cleanup(entry.row.domain, token, entry.row.key_authorization)
        except Exception as exc:  # the contract says it never raises; be sure
            log_event("relayed challenge cleanup failed", level=logging.ERROR,
                      domain=entry.row.domain, type=entry.row.type, error=repr(exc))
        if forget_ack and entry.acked:
            # an ack written while the owner deleted the row would outlive it
            with contextlib.suppress(ControllerError):
                await asyncio.to_thread(self._unack, token)

    # -- database (worker threads) -----------------------------------------------------------

    def _read(self) -> dict[str, tuple[_Row, float]]:
        with self._db.tx() as conn:
            # rows of an owner that died and never came back: gone an hour after expiry
            conn.execute("DELETE FROM challenge_acks a USING challenges c WHERE a.token ="
                         " c.token AND c.expires_at < now() - interval '1 hour'")
            conn.execute("DELETE FROM challenges WHERE expires_at < now() - interval '1 hour'")
            rows = conn.execute(
                "SELECT token, type, domain, key_authorization,"
                " EXTRACT(EPOCH FROM expires_at - now())::float8"
                " FROM challenges WHERE owner <> %s AND expires_at > now()",
                (self._node,)).fetchall()
        return {str(t): (_Row(str(k), str(d), str(ka)), float(left))
                for t, k, d, ka, left in rows}

    def _ack(self, tokens: list[str]) -> None:
        with self._db.tx() as conn:
            # only for rows that still exist: no ack for a challenge already cleaned up
            conn.execute(
                "INSERT INTO challenge_acks (token, node) SELECT token, %s FROM challenges"
                " WHERE token = ANY(%s) ON CONFLICT DO NOTHING", (self._node, tokens))

    def _unack(self, token: str) -> None:
        with self._db.tx() as conn:
            conn.execute(
                "DELETE FROM challenge_acks a WHERE a.token = %s AND a.node = %s"
                " AND NOT EXISTS (SELECT 1 FROM challenges c WHERE c.token = a.token)",
                (token, self._node))
