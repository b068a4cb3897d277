"""The fleet's nodes: heartbeats, who is live, whose settings rule, and the merged desired state.

Built by app.py in fleet mode; called at the start of every pass by the fleet sync (heartbeat,
publish, merged, settings_state), by /healthz and `diff` (live, settings_state) and by a
maintenance chore (forget_dead). Every query uses the database's clock: a node is live while
`heartbeat_at > now() - timeout` (FLEET.md "Semantics").

- `heartbeat()` upserts this node's `nodes` row; `started_at` is fixed at this process's first
  heartbeat (so the oldest running process leads), `settings_hash` is the sha256 of the
  canonical JSON of the settings that must agree fleet-wide ([acme] CA, key type, profile).
- `settings_state()`: the fleet's settings are those of the live node started first (ties: by
  name); a node whose hash differs must not order (the caller refuses its orders).
- `publish(desired)` replaces this node's `node_specs` rows in one transaction when they changed
  since the last publish, and NOTIFYs `njcm_desired` <node>.
- `merged(local)` (one query): for each key this node wants, its own names when no other live
  node wants the key, else (domain, *sorted(union of the live nodes' names - {domain})), so
  every node computes the same SAN list; keys only other live nodes want are `elsewhere`;
  `disagreements` says in human lines where live nodes want different things.
Database errors propagate as db.py's TemporaryError / StoreError / ConfigError.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import orjson

from controller.adapters.pg.db import Database
from controller.logs import log_event
from controller.model import CertificateSpec, ChallengeType, Desired, KeyType, Source

DEAD_RETENTION = timedelta(days=7)


def canonical_hash(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of `value` (keys sorted)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def spec_to_json(spec: CertificateSpec) -> dict[str, Any]:
    """What other nodes need of one spec (no listens, no node-local paths or origins)."""
    return {"domain": spec.domain, "names": list(spec.names),
            "key_type": spec.key_type.value if spec.key_type else None,
            "source": spec.source.value,
            "challenge_type": spec.challenge_type.value if spec.challenge_type else None,
            "profile": spec.profile, "profile_required": spec.profile_required,
            "reuse_key": spec.reuse_key, "slot": spec.slot, "dual": spec.dual}


def spec_from_json(data: Mapping[str, Any], *, origin: str = "") -> CertificateSpec:
    """The CertificateSpec (without listens) `spec_to_json` made; ValueError/KeyError when
    `data` is not one."""
    slot = data.get("slot")
    if slot not in (None, "rsa", "ecc"):
        raise ValueError(f"unknown slot {slot!r}")
    key_type, challenge = data.get("key_type"), data.get("challenge_type")
    return CertificateSpec(
        domain=str(data["domain"]), names=tuple(str(n) for n in data["names"]),
        key_type=KeyType(key_type) if key_type else None,
        source=Source(data.get("source") or Source.CONF.value), origin=origin,
        challenge_type=ChallengeType(challenge) if challenge else None,
        profile=data.get("profile"), profile_required=data.get("profile_required"),
        reuse_key=data.get("reuse_key"), slot=slot, dual=bool(data.get("dual", False)))


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One `nodes` row, with whether it is live now (by the database's clock)."""

    name: str
    started_at: datetime
    heartbeat_at: datetime
    settings_hash: str
    host: str
    prefix: str
    live: bool


@dataclass(frozen=True, slots=True)
class SettingsState:
    """This node's settings hash against the fleet's (the leader's: the live node started
    first). `differing`: the live nodes whose hash is not the leader's."""

    ours: str
    fleet_hash: str
    leader: str
    agrees: bool
    differing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FleetView:
    """The merged desired state of this node and the lines saying where live nodes differ."""

    desired: Desired
    disagreements: tuple[str, ...]


def _listed(nodes: Iterable[str]) -> str:
    return ", ".join(nodes)


def _names_text(names: frozenset[str], domain: str) -> str:
    return ",".join((domain, *sorted(names - {domain})) if domain in names else sorted(names))


class NodeRegistry:
    """See the module docstring. Thread-safe."""

    def __init__(self, db: Database, node: str, *, prefix: str, settings: Mapping[str, str],
                 timeout: timedelta, version: str) -> None:
        self.db = db
        self.node = node
        self.prefix = prefix
        self.settings = dict(settings)
        self.settings_hash = canonical_hash(self.settings)
        self.timeout = timeout
        self.version = version
        self.host = socket.gethostname()
        self.started_at: datetime | None = None
        self._published: str | None = None
        self._published_desired: Desired | None = None  # the object last published or found same
        self._lock = threading.Lock()

    # -- this node -----------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Upsert this node's row: heartbeat_at = now() (the database's clock)."""
        with self._lock, self.db.tx() as conn:
            row = conn.execute(
                "INSERT INTO nodes (name, started_at, heartbeat_at, settings_hash, settings, "
                "host, prefix, pid, version) VALUES (%(name)s, COALESCE(%(started)s, now()), "
                "now(), %(hash)s, %(settings)s::jsonb, %(host)s, %(prefix)s, %(pid)s, "
                "%(version)s) ON CONFLICT (name) DO UPDATE SET "
                "started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at, "
                "settings_hash = EXCLUDED.settings_hash, settings = EXCLUDED.settings, "
                "host = EXCLUDED.host, prefix = EXCLUDED.prefix, pid = EXCLUDED.pid, "
                "version = EXCLUDED.version RETURNING started_at, (xmax = 0)",
                {"name": self.node, "started": self.started_at, "hash": self.settings_hash,
                 "settings": orjson.dumps(self.settings).decode(), "host": self.host,
                 "prefix": self.prefix, "pid": os.getpid(), "version": self.version},
            ).fetchone()
        assert row is not None
        if self.started_at is not None and row[1]:
            # the row was gone (forgotten as dead while this node was away): publish again
            log_event("fleet node row re-created", node=self.node)
            self._published = None
            self._published_desired = None
        self.started_at = row[0]

    def leave(self) -> None:
        """A clean stop: this node stops counting as live at once (its heartbeat is set back
        past the timeout), so no order waits for its challenge confirmation. Its wanted names
        then count as unwanted; a name's garbage collection still waits deleteGracePeriod,
        and the node's next heartbeat makes them wanted again."""
        with self._lock, self.db.tx() as conn:
            conn.execute("UPDATE nodes SET heartbeat_at = now() - %s - interval '1 second' "
                         "WHERE name = %s", (self.timeout, self.node))

    def publish(self, desired: Desired) -> bool:
        """Replace this node's node_specs rows when they changed since the last publish;
        True if written (NOTIFY njcm_desired <node>)."""
        if desired is self._published_desired:  # the same (unchanged) desired state
            return False
        rows = sorted((key, spec.domain, list(spec.names), spec_to_json(spec))
                      for key, spec in desired.specs.items())
        digest = canonical_hash(rows)
        with self._lock:
            if digest == self._published:
                self._published_desired = desired
                return False
            with self.db.tx() as conn:
                conn.execute("DELETE FROM node_specs WHERE node = %s", (self.node,))
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO node_specs (node, key, domain, names, spec) "
                        "VALUES (%s, %s, %s, %s, %s::jsonb)",
                        [(self.node, key, domain, names, orjson.dumps(spec).decode())
                         for key, domain, names, spec in rows])
                Database.notify(conn, "njcm_desired", self.node)
            self._published = digest
            self._published_desired = desired
        return True

    # -- the fleet -----------------------------------------------------------------------------

    def nodes(self) -> list[NodeRow]:
        """Every known node, live or not, ordered by started_at, name."""
        with self.db.tx() as conn:
            rows = conn.execute(
                "SELECT name, started_at, heartbeat_at, settings_hash, host, prefix, "
                "heartbeat_at > now() - %s FROM nodes ORDER BY started_at, name",
                (self.timeout,)).fetchall()
        return [NodeRow(*r) for r in rows]

    def live(self) -> list[NodeRow]:
        """The live nodes, ordered by started_at, name."""
        return [n for n in self.nodes() if n.live]

    def live_names(self) -> list[str]:
        return [n.name for n in self.live()]

    def settings_state(self) -> SettingsState:
        """Whether this node's settings are the fleet's (see SettingsState)."""
        live = self.live()
        if not live:
            return SettingsState(self.settings_hash, self.settings_hash, self.node, True, ())
        leader = live[0]
        differing = tuple(n.name for n in live if n.settings_hash != leader.settings_hash)
        return SettingsState(self.settings_hash, leader.settings_hash, leader.name,
                             self.settings_hash == leader.settings_hash, differing)

    def merged(self, local: Desired) -> FleetView:
        """This node's desired state merged with the live nodes' (see the module docstring)."""
        with self.db.tx() as conn:
            rows = conn.execute(
                "SELECT n.name, s.key, s.domain, s.names FROM nodes n "
                "LEFT JOIN node_specs s ON s.node = n.name "
                "WHERE n.heartbeat_at > now() - %s AND n.name <> %s",
                (self.timeout, self.node)).fetchall()
        others: set[str] = set()
        wanted: dict[str, dict[str, frozenset[str]]] = {}  # key -> node -> names
        domains: dict[str, str] = {}
        for name, key, domain, names in rows:
            others.add(name)
            if key is not None:
                wanted.setdefault(key, {})[name] = frozenset(names)
                domains.setdefault(key, domain)
        specs: dict[str, CertificateSpec] = {}
        for key, spec in local.specs.items():
            theirs = wanted.get(key)
            if not theirs:
                specs[key] = spec
                continue
            union = set(spec.names).union(*theirs.values())
            specs[key] = replace(spec, names=(spec.domain, *sorted(union - {spec.domain})))
        elsewhere = {key: tuple(sorted(by)) for key, by in sorted(wanted.items())
                     if key not in local.specs}
        lines = _disagreements(self.node, local, wanted, domains, others)
        return FleetView(Desired(specs=specs, warnings=local.warnings, elsewhere=elsewhere),
                         lines)

    def forget_dead(self, older_than: timedelta = DEAD_RETENTION) -> int:
        """Delete the rows of nodes whose last heartbeat is older than `older_than`, with
        their node_specs (their node_status stays: `certs list` history); how many."""
        with self.db.tx() as conn:
            gone = conn.execute(
                "DELETE FROM nodes WHERE heartbeat_at < now() - %s AND name <> %s "
                "RETURNING name", (older_than, self.node)).fetchall()
            names = [g[0] for g in gone]
            if names:
                conn.execute("DELETE FROM node_specs WHERE node = ANY(%s)", (names,))
        for name in names:
            log_event("fleet node forgotten", node=name, dead_for_more_than=str(older_than))
        return len(names)


def _disagreements(me: str, local: Desired, wanted: Mapping[str, Mapping[str, frozenset[str]]],
                   domains: Mapping[str, str], others: set[str]) -> tuple[str, ...]:
    """Human lines: keys not every live node wants, and keys whose names differ."""
    everyone = others | {me}
    lines: list[str] = []
    for key in sorted(set(local.specs) | set(wanted)):
        by: dict[str, frozenset[str]] = dict(wanted.get(key, {}))
        if key in local.specs:
            by[me] = frozenset(local.specs[key].names)
        domain = local.specs[key].domain if key in local.specs else domains.get(key, key)
        lacking = sorted(everyone - set(by))
        if lacking:
            verb = "does" if len(lacking) == 1 else "do"
            lines.append(f"{key}: wanted by {_listed(sorted(by))} only "
                         f"({_listed(lacking)} {verb} not have it)")
        if len(set(by.values())) > 1:
            groups: dict[frozenset[str], list[str]] = {}
            for node in sorted(by):
                groups.setdefault(by[node], []).append(node)
            parts = [f"{_listed(nodes)} {'has' if len(nodes) == 1 else 'have'} "
                     f"{_names_text(names, domain)}"
                     for names, nodes in sorted(groups.items(), key=lambda g: g[1])]
            lines.append(f"{key}: names differ: {'; '.join(parts)}")
    return tuple(lines)
