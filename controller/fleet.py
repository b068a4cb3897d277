"""Fleet mode's composition: the PostgreSQL adapters of one node, wired for app.py and service.py.

Built by app.py when `[store] backend = "postgres"` (storeconfig.py). Holds the node's
Database (adapters/pg/db.py) and, over it, the fenced certificate store with its local mirror
(pg/certs.py, pg/leases.py), the split statuses (pg/status.py), the node registry (pg/nodes.py),
the event log, ledger, deletion-guard confirmation and ACME account sync. It gives the loop:
- `sync` (the Reconciler's `fleet_sync`, at the start of every pass): heartbeat, publish this
  node's desired state, read the fleet's merged one, pull new certificates into the mirror,
  reload the shared statuses (a refused DSN: one-shot commands stop with its ConfigError,
  `run` treats it as an outage). When the database cannot be reached it keeps the last fleet view
  (or, before any, counts every mirrored certificate as wanted elsewhere), so an outage never
  makes a certificate look orphaned; the error is logged once per outage, /healthz says so.
- `gate` (ports.OrderGate, the executor's): one order per certificate across the fleet.
- `background(wake)` (service.py): the LISTEN dispatcher (njcm_cert/desired/status wake the
  loop, njcm_challenge wakes the challenge relay), the heartbeat every nodeTimeout/4 and the
  relay itself.
`diff` builds it read-only: no migration, no heartbeat, no publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.adapters.pg.accounts import AccountSync
from controller.adapters.pg.certs import FleetCertStore
from controller.adapters.pg.crypto import KeySealer, load_key_file
from controller.adapters.pg.db import Database
from controller.adapters.pg.leases import LeaseBusy, Leases
from controller.adapters.pg.nodes import NodeRegistry, SettingsState
from controller.adapters.pg.status import PgStatus
from controller.adapters.store.lego import LegoStore
from controller.config import Config
from controller.errors import ConfigError, ControllerError, HandledElsewhere, StoreUnavailable
from controller.logs import log_event
from controller.metrics import ControllerMetrics
from controller.model import Desired
from controller.paths import StorePaths
from controller.status import CertStatus

if TYPE_CHECKING:
    from controller.adapters.pg.challenges import ChallengeRelay

CHANNELS = ("njcm_cert", "njcm_desired", "njcm_status", "njcm_challenge")
VERSION = "0.1.0"


def fleet_settings(config: Config) -> dict[str, str]:
    """The [acme] settings every node of a fleet must share (CA, key type, profile)."""
    acme = config.acme
    kt = acme.keyType
    key_type = ",".join(str(k) for k in kt) if isinstance(kt, tuple) else str(kt or "")
    return {"acmeCaDir": acme.acmeCaDir.strip(), "keyType": str(key_type),
            "profile": acme.profile.strip()}


@dataclass
class Fleet:
    config: Config
    mirror: LegoStore
    read_only: bool = False
    node: str = field(init=False)
    db: Database = field(init=False)
    sealer: KeySealer = field(init=False)
    leases: Leases = field(init=False)
    store: FleetCertStore = field(init=False)
    status: PgStatus = field(init=False)
    nodes: NodeRegistry = field(init=False)
    settings: SettingsState | None = field(init=False, default=None)
    live: tuple[str, ...] = field(init=False, default=())
    db_error: str | None = field(init=False, default=None)
    last_sync: float | None = field(init=False, default=None)  # monotonic
    disagreements: tuple[str, ...] = field(init=False, default=())
    _view: Desired | None = field(init=False, default=None)
    relay: ChallengeRelay | None = field(init=False, default=None)
    # `run` (service.py) keeps going when the DSN is refused; one-shot commands stop with it
    patient: bool = field(init=False, default=False)
    _served: dict[str, int] = field(init=False, default_factory=dict)
    _served_at: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        cfg, section = self.config, self.config.store
        self.node = section.node_name(cfg.prefix)
        self.db = Database(section.resolve_dsn(cfg.prefix), read_only=self.read_only)
        key_file = section.key_file(cfg.prefix)
        self.sealer = KeySealer(load_key_file(key_file) if key_file is not None else None)
        self.leases = Leases(self.db, self.node, section.leaseDuration)
        self.store = FleetCertStore(self.db, self.mirror, self.sealer, self.node, self.leases)
        self.status = PgStatus(self.db, self.node)
        self.nodes = NodeRegistry(self.db, self.node, prefix=str(cfg.prefix),
                                  settings=fleet_settings(cfg), timeout=section.nodeTimeout,
                                  version=VERSION)
        self.mirror_paths = StorePaths(cfg.prefix)
        self.accounts = AccountSync(self.db, self.sealer, self.mirror_paths.accounts)
        self._accounts_stamp: tuple[int, int] | None = None
        self.gate = FleetGate(self)
        if not self.sealer.encrypts and not self.read_only:
            log_event("fleet store: private keys are stored in the database IN CLEAR; set "
                      "[store] encryptionKeyFile", level=logging.WARNING, node=self.node)

    @property
    def db_up(self) -> bool:
        return self.db_error is None and self.last_sync is not None

    # -- every pass ----------------------------------------------------------------------------

    async def sync(self, local: Desired) -> tuple[Desired, dict[str, CertStatus] | None]:
        """The Reconciler's fleet_sync (see the module docstring)."""
        try:
            view, statuses = await asyncio.to_thread(self._sync, local)
        except ConfigError as exc:
            if not self.patient:  # a one-shot command: the DSN is wrong, say so and stop
                raise
            self._outage(exc)  # `run`: an operator can fix the role or database meanwhile
            return self._fallback(local), None
        except ControllerError as exc:
            self._outage(exc)
            return self._fallback(local), None
        if self.db_error is not None:
            log_event("fleet database reachable again", node=self.node,
                      database=self.db.shown)
        self.db_error = None
        self.last_sync = time.monotonic()
        return view, statuses

    def _sync(self, local: Desired) -> tuple[Desired, dict[str, CertStatus]]:
        if not self.read_only:
            self.nodes.heartbeat()
            self.nodes.publish(local)
        fleet_view = self.nodes.merged(local)
        self.live = tuple(self.nodes.live_names())
        self.settings = self.nodes.settings_state()
        self.disagreements = fleet_view.disagreements
        self._view = fleet_view.desired
        if not self.read_only:
            self.store.pull(set(fleet_view.desired.specs))
            self._push_accounts()
        self._refresh_served()
        return fleet_view.desired, self.status.load_all()

    def _outage(self, exc: ControllerError) -> None:
        first = self.db_error is None
        self.db_error = str(exc)
        if first:
            log_event("fleet database unreachable: serving what the local mirror has, no "
                      "orders until it is back", level=logging.ERROR, node=self.node,
                      error=str(exc))

    def _fallback(self, local: Desired) -> Desired:
        """Desired state while the database is away: this node's own, with everything the
        last fleet view (or the mirror) holds counted as wanted elsewhere (never orphaned)."""
        elsewhere: dict[str, tuple[str, ...]] = {}
        if self._view is not None:
            elsewhere.update(self._view.elsewhere)
            extra = set(self._view.specs) - set(local.specs)
        else:
            try:
                extra = set(self.mirror.load_all()[0]) - set(local.specs)
            except ControllerError:
                extra = set()
        for key in extra:
            elsewhere.setdefault(key, ("(fleet database unreachable)",))
        return replace(local, elsewhere={k: v for k, v in elsewhere.items()
                                         if k not in local.specs})

    async def pull_accounts(self) -> None:
        """The fleet's ACME accounts into .lego/accounts/ before the issuer is built (so a
        node does not register its own); a database away is logged, the issuer goes on."""
        try:
            got = await asyncio.to_thread(self.accounts.pull)
        except ControllerError as exc:
            log_event("fleet ACME accounts not read", level=logging.WARNING, error=str(exc))
            return
        if got:
            log_event("fleet ACME accounts written to the mirror", files=got)

    def _push_accounts(self) -> None:
        """Local account files the database lacks go up (after this node registered one)."""
        stamp = _tree_stamp(self.mirror_paths.accounts)
        if stamp == self._accounts_stamp:
            return
        self.accounts.push()
        self._accounts_stamp = stamp

    def live_nodes(self) -> list[str]:
        return list(self.live)

    # -- background ----------------------------------------------------------------------------

    async def background(self, wake: Callable[[], None]) -> None:
        """LISTEN, heartbeat and the challenge relay until cancelled (service.py)."""
        tasks = [asyncio.ensure_future(self.db.listen(CHANNELS, self._dispatch(wake))),
                 asyncio.ensure_future(self._heartbeats(wake))]
        if self.relay is not None:
            tasks.append(asyncio.ensure_future(self.relay.run()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            if self.relay is not None:
                with contextlib.suppress(Exception):
                    await self.relay.close()


    def _dispatch(self, wake: Callable[[], None]) -> Callable[[str, str], None]:
        def on_notify(channel: str, payload: str) -> None:
            if channel == "njcm_challenge":
                if self.relay is not None:
                    self.relay.wake()
                return
            if channel == "njcm_status" or (channel == "njcm_desired"
                                             and payload == self.node):
                return  # statuses are re-read by every pass; our own publish
            wake()
        return on_notify

    async def _heartbeats(self, wake: Callable[[], None]) -> None:
        """Every nodeTimeout/4: this node is live. During an outage also the retry: the first
        heartbeat that gets through wakes the loop, whose pass then catches up."""
        every = max(1.0, self.config.store.nodeTimeout.total_seconds() / 4)
        while True:
            await asyncio.sleep(every if self.db_error is None else min(every, 5.0))
            try:
                await asyncio.to_thread(self.nodes.heartbeat)
            except ControllerError as exc:
                self._outage(exc)
                continue
            if self.db_error is not None:
                wake()

    # -- views ---------------------------------------------------------------------------------

    def health(self) -> tuple[str, dict[str, Any]]:
        """/healthz's fleet part: degraded while the database is away or this node's settings
        differ from the fleet's."""
        agrees = self.settings.agrees if self.settings is not None else None
        status = "degraded" if self.db_error is not None or agrees is False else "ok"
        return status, {"fleet": {
            "node": self.node,
            "database_up": self.db_error is None and self.last_sync is not None,
            "live_nodes": len(self.live),
            "settings_agree": agrees,
            "leases_held": len(self.leases.held_keys()),
            "keys_encrypted": self.sealer.encrypts,
        }}

    def _refresh_served(self) -> None:
        """Per node, how many certificates its NJet was proved to serve with the fingerprint
        the database holds (one grouped query, at most every 15 s; run by `_sync`, off the
        event loop)."""
        now = time.monotonic()
        if self._served_at is not None and now - self._served_at < 15:
            return
        with self.db.tx() as conn:
            rows = conn.execute(
                "SELECT ns.node, count(*) FROM node_status ns JOIN certs c "
                "ON c.key = ns.key AND c.fingerprint = ns.fingerprint GROUP BY ns.node"
            ).fetchall()
        self._served = {str(node): int(n) for node, n in rows}
        self._served_at = now

    def observe(self, metrics: ControllerMetrics) -> None:
        """This node's fleet gauges (admin_backend.py, after every pass)."""
        state = self.settings
        metrics.set_fleet(self.node, db_up=self.db_up, live=len(self.live),
                          leases=len(self.leases.held_keys()),
                          settings_agree=state.agrees if state is not None else None,
                          served=self._served if self.db_up else {})

    def describe(self) -> dict[str, Any]:
        """What `diff` shows of the fleet (read right now; a database away is said so)."""
        doc: dict[str, Any] = {"node": self.node, "database": self.db.shown,
                               "keys_encrypted": self.sealer.encrypts,
                               "database_error": self.db_error}
        try:
            rows = self.leases.holders()
            nodes = self.nodes.live()
        except ControllerError as exc:
            doc["database_error"] = str(exc)
            return doc
        doc["nodes"] = [{"name": n.name, "live": n.live, "heartbeat_at":
                         n.heartbeat_at.isoformat()} for n in nodes]
        doc["leases"] = [{"key": r.key, "owner": r.owner, "generation": r.generation,
                          "expires_at": r.expires_at.isoformat()} for r in rows if r.live]
        state = self.settings
        doc["settings_agree"] = state.agrees if state is not None else None
        doc["settings_leader"] = state.leader if state is not None else None
        doc["settings_differing"] = list(state.differing) if state is not None else []
        doc["disagreements"] = list(self.disagreements)
        try:
            doc["pending_applies"] = self._pending_applies({n.name for n in nodes if n.live})
        except ControllerError as exc:
            doc["database_error"] = str(exc)
        return doc

    def _pending_applies(self, live: set[str]) -> list[dict[str, Any]]:
        """Per certificate of the fleet's store, the live nodes whose NJet was last proved to
        serve something else (or nothing): each has an apply to do."""
        served = self.status.served_by()
        with self.db.tx() as conn:
            wanted: dict[str, set[str]] = {}
            for node, key in conn.execute("SELECT node, key FROM node_specs").fetchall():
                wanted.setdefault(str(key), set()).add(str(node))
        out = []
        for row in sorted(self.store.fleet_rows(), key=lambda r: r.key):
            done = {s.node for s in served.get(row.key, []) if s.fingerprint == row.fingerprint}
            behind = sorted((live & wanted.get(row.key, set())) - done)
            if behind:
                out.append({"key": row.key, "nodes": behind})
        return out

    def close(self) -> None:
        """A clean stop (app.py, in a worker thread): this node stops counting as live at
        once, so no order of the fleet waits for its challenge confirmation; then the
        connections close."""
        if not self.read_only and self.last_sync is not None:
            with contextlib.suppress(ControllerError):
                self.nodes.leave()
        self.db.close()


class FleetGate:
    """ports.OrderGate over the fleet's leases and shared store (see ports/fleet.py)."""

    def __init__(self, fleet: Fleet, *, max_wait: float | None = None) -> None:
        self.fleet = fleet
        lease = fleet.config.store.leaseDuration.total_seconds()
        self.max_wait = max_wait if max_wait is not None else 3 * lease

    @contextlib.asynccontextmanager
    async def order(self, key: str, *, expected: str | None) -> AsyncIterator[None]:
        fleet = self.fleet
        state = fleet.settings
        if state is not None and not state.agrees:
            raise HandledElsewhere(
                f"this node's [acme] settings differ from the fleet's (those of "
                f"{state.leader}); it does not order {key}")
        if fleet.db_error is not None:
            raise_unreachable(fleet.db_error)
        deadline = time.monotonic() + self.max_wait
        await self._stored_elsewhere(key, expected)  # before the lease: nothing to wait for
        async with contextlib.AsyncExitStack() as stack:
            while True:
                try:
                    await stack.enter_async_context(fleet.leases.hold(key))
                    break
                except LeaseBusy as busy:
                    if time.monotonic() >= deadline:
                        raise HandledElsewhere(f"{busy}; not ordered here") from None
                    await asyncio.sleep(0.25)
                    # the holder's certificate may land before its lease is released
                    await self._stored_elsewhere(key, expected)
            await self._stored_elsewhere(key, expected)  # re-checked under the lease
            yield

    async def _stored_elsewhere(self, key: str, expected: str | None) -> None:
        """HandledElsewhere (after pulling it into the mirror) when the fleet's store holds
        another certificate for `key` than `expected`, the one this plan saw."""
        fleet = self.fleet
        current = await asyncio.to_thread(fleet.store.db_fingerprint, key)
        if current is not None and current != expected:
            await asyncio.to_thread(fleet.store.pull, [key])
            raise HandledElsewhere(
                f"another node stored a new certificate for {key} ({current[:16]}); "
                "it is applied from the shared store")


def _tree_stamp(root: Path) -> tuple[int, int]:
    """(file count, newest mtime in ns) of the files under `root`: changes when one is added."""
    count, newest = 0, 0
    for path in root.rglob("*") if root.is_dir() else ():
        with contextlib.suppress(OSError):
            st = path.stat()
            count += 1
            newest = max(newest, st.st_mtime_ns)
    return count, newest


def raise_unreachable(error: str) -> None:
    raise StoreUnavailable(f"no order while the fleet database is unreachable: {error}")
