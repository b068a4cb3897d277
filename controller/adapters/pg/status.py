"""Certificate statuses in the fleet database: a ports.StatusPersistence over two tables.

Built by app.py in fleet mode (instead of adapters/store/statusfile.py); called by reconcile.py
(load_all, save, delete), and by `certs list` / the admin API (`served_by`).

A CertStatus is stored in two parts (FLEET.md "Status split"):
- the NODE part, in `node_status` (key, node): what this node's NJet serves (applied_fingerprint,
  applied_at), its conditions, and the failure fields (attempts, last_failure,
  last_failure_at, backoff_until, failure_scope) when the last failure was this node's own
  (`failure_scope == FAILURE_NODE`: an apply failure holds this node only). The row's
  `fingerprint` / `probed_at` columns repeat applied_fingerprint / applied_at for queries.
- the FLEET part, in `cert_status` (key): everything else (an order's backoff, ARI, renewal
  requests, profiles...), shared by every node.
`split` and `merge` are the pure halves of that. Loading overlays this node's part on the fleet
part; a node failure's fields win only while its backoff ends later than the fleet's.

`save` writes a part only if it differs from what this node last loaded or wrote (last writer
wins per part) and NOTIFYs `njcm_status` <key> when the fleet part was written. `delete` drops
this node's part, and the fleet part only when no `certs` row exists for the key.

`load_all` is incremental: rows are cached with their `version` (one sequence for both tables);
a load fetches the rows above the highest version it holds, with the count and two checksums
of each table's versions (this node's rows of node_status). Nothing changed: one query that
returns the two checksum rows. A version is allocated before its transaction commits, so a
row may become visible after a higher one was read, and rows vanish when another node deletes
them: either shows as a checksum that differs from the cache's, and then the (key, version)
pairs are listed and only the rows that differ are fetched. Bodies hold only the fields that
differ from a fresh CertStatus. Unreadable bodies are logged (once per version) and left out.
Each save or delete is one short transaction, bounded by statement and lock timeouts (the
reconciler calls them one by one from a worker thread). Database errors propagate as db.py's
TemporaryError / StoreError / ConfigError. Thread-safe (one lock around the caches).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from controller.adapters.pg.db import Conn, Database
from controller.clock import utc_now
from controller.gcpause import gc_paused
from controller.logs import log_event
from controller.status import (
    BACKOFF_CAP,
    FAILURE_NODE,
    MAX_RETRY_AFTER,
    CertStatus,
    status_from_json,
    status_to_json,
)

NODE_FIELDS = ("applied_fingerprint", "applied_at", "conditions")
FAILURE_FIELDS = ("attempts", "last_failure", "last_failure_at", "backoff_until",
                  "failure_scope")
_OVERLAID = frozenset(NODE_FIELDS + FAILURE_FIELDS)
_DEFAULTS: dict[str, Any] = orjson.loads(status_to_json(CertStatus(domain="-")))

# every write transaction: a stuck row lock or statement never holds the event loop for long
_WRITE_LIMITS = ("SELECT set_config('statement_timeout', '10s', true), "
                 "set_config('lock_timeout', '5s', true)")

Body = dict[str, Any]
_UNSET = object()  # a field absent from a compact body


_MISSING = object()


def _compact(body: Body) -> Body:
    """`body` without the fields that hold their default (`domain` always stays)."""
    return {k: v for k, v in body.items() if k == "domain" or v != _DEFAULTS.get(k, _MISSING)}


def split(status: CertStatus, fleet_base: Mapping[str, Any] | None = None) -> tuple[Body, Body]:
    """(fleet part, node part) of `status` as JSON-able dicts holding `domain` and the fields
    that differ from their defaults. With a node failure the fleet part keeps the failure
    fields of `fleet_base` (the fleet part last loaded; none: the defaults), so this node's
    apply failure never touches the fleet's."""
    full: Body = orjson.loads(status_to_json(status))
    node: Body = {"domain": status.domain, **{f: full[f] for f in NODE_FIELDS}}
    fleet = {k: v for k, v in full.items() if k not in NODE_FIELDS}
    if status.failure_scope == FAILURE_NODE:
        node.update({f: full[f] for f in FAILURE_FIELDS})
        base = fleet_base or {}
        for f in FAILURE_FIELDS:
            fleet[f] = base.get(f, _DEFAULTS[f])
        if fleet["failure_scope"] == FAILURE_NODE:
            fleet["failure_scope"] = None
    return _compact(fleet), _compact(node)


def merge(domain: str, fleet: Mapping[str, Any] | None,
          node: Mapping[str, Any] | None) -> CertStatus:
    """The status of `domain`: the fleet part overlaid with this node's part (a missing field
    is its default). The failure fields are the node part's when its failure_scope is
    FAILURE_NODE and its backoff ends later than the fleet part's (or the fleet part has
    none), else the fleet part's. Raises pydantic.ValidationError when the parts do not make
    a CertStatus."""
    out: Body = {k: v for k, v in (fleet or {}).items() if k not in _OVERLAID}
    out["domain"] = domain
    failure = fleet or {}
    if node:
        out.update({f: node[f] for f in NODE_FIELDS if f in node})
        if node.get("failure_scope") == FAILURE_NODE and _node_failure_wins(
                node.get("backoff_until"), failure.get("backoff_until")):
            failure = node
    out.update({f: failure[f] for f in FAILURE_FIELDS if f in failure})
    if failure is not node and out.get("failure_scope") == FAILURE_NODE:
        out["failure_scope"] = None  # never the fleet part's to say
    return status_from_json(orjson.dumps(out))


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _node_failure_wins(node_until: object, fleet_until: object) -> bool:
    theirs = _instant(fleet_until)
    if theirs is None:
        return True
    ours = _instant(node_until)
    try:
        return ours is not None and ours > theirs
    except TypeError:  # a naive instant in a hand-written body: validation refuses it later
        return False


class NodeServes(NamedTuple):
    """What one node's NJet was last proved to serve for a key."""

    node: str
    fingerprint: str | None
    probed_at: datetime | None


@dataclass(slots=True)
class _Row:
    version: int
    text: str
    body: Body | None = None  # parsed on demand (save compares with it)
    bad: bool = False  # not a JSON object (logged when read)

    def parsed(self) -> Body | None:
        if self.body is None and not self.bad:
            try:
                body = orjson.loads(self.text)
            except orjson.JSONDecodeError:
                body = None
            if isinstance(body, dict):
                self.body = body
            else:
                self.bad = True
        return self.body


def _mix(version: int) -> int:
    """A second checksum of a version (the SQL in _LOAD computes the same)."""
    return ((version % 2147483647) * 48271) % 2147483647


@dataclass(slots=True)
class _Sums:
    """Count and checksums of the versions one cache holds (to compare with the table's)."""

    count: int = 0
    total: int = 0
    mixed: int = 0

    def add(self, version: int, sign: int = 1) -> None:
        self.count += sign
        self.total += sign * version
        self.mixed += sign * _mix(version)


_MIX = "coalesce(sum(mod(mod(version, 2147483647) * 48271, 2147483647)), 0)::bigint"
_LOAD = f"""
SELECT 'f', key, version, body::text, NULL::bigint, NULL::bigint FROM cert_status
 WHERE version > %(max)s
UNION ALL
SELECT 'n', key, version, body::text, NULL, NULL FROM node_status
 WHERE node = %(node)s AND version > %(max)s
UNION ALL
SELECT 'F', NULL, count(*), NULL, coalesce(sum(version), 0)::bigint, {_MIX} FROM cert_status
UNION ALL
SELECT 'N', NULL, count(*), NULL, coalesce(sum(version), 0)::bigint, {_MIX} FROM node_status
 WHERE node = %(node)s
"""
_VERSIONS = """
SELECT 'f', key, version FROM cert_status UNION ALL
SELECT 'n', key, version FROM node_status WHERE node = %(node)s
"""
_BODIES = """
SELECT 'f', key, version, body::text FROM cert_status WHERE key = ANY(%(f)s) UNION ALL
SELECT 'n', key, version, body::text FROM node_status WHERE node = %(node)s AND key = ANY(%(n)s)
"""


class PgStatus:
    """See the module docstring. `queries` counts the statements load_all ran."""

    def __init__(self, db: Database, node: str, *,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.db = db
        self.node = node
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, _Row]] = {"f": {}, "n": {}}
        self._sums: dict[str, _Sums] = {"f": _Sums(), "n": _Sums()}
        self._merged: dict[str, tuple[int, int, CertStatus | None]] = {}
        self._max = 0
        self.queries = 0

    # -- the caches ----------------------------------------------------------------------------

    def _put(self, tag: str, key: str, row: _Row) -> None:
        rows, sums = self._rows[tag], self._sums[tag]
        old = rows.get(key)
        if old is not None:
            sums.add(old.version, -1)
        rows[key] = row
        sums.add(row.version)
        self._max = max(self._max, row.version)

    def _pop(self, tag: str, key: str) -> None:
        old = self._rows[tag].pop(key, None)
        if old is not None:
            self._sums[tag].add(old.version, -1)

    # -- loading -------------------------------------------------------------------------------

    def load_all(self) -> dict[str, CertStatus]:
        """Every status with a fleet part or a node part of this node, keyed by store key."""
        with self._lock, gc_paused():  # thousands of acyclic rows: no collector walks
            with self.db.tx() as conn:
                rows = conn.execute(_LOAD, {"max": self._max, "node": self.node}).fetchall()
                self.queries += 1
                wanted: dict[str, _Sums] = {}
                for tag, key, version, text, total, mixed in rows:
                    if tag in ("F", "N"):
                        wanted[tag.lower()] = _Sums(int(version), int(total), int(mixed))
                    else:
                        self._take(tag, key, int(version), text)
                if any(wanted[t] != self._sums[t] for t in ("f", "n")):
                    self._resync(conn)
            return self._statuses()

    def _take(self, tag: str, key: str, version: int, text: str) -> None:
        old = self._rows[tag].get(key)
        if old is None or old.version != version:
            self._put(tag, key, _Row(version, text))

    def _resync(self, conn: Conn) -> None:
        """The cache differs from the tables: list (key, version), fetch what differs."""
        present: dict[str, dict[str, int]] = {"f": {}, "n": {}}
        for tag, key, version in conn.execute(_VERSIONS, {"node": self.node}).fetchall():
            present[tag][key] = int(version)
        self.queries += 1
        stale: dict[str, list[str]] = {"f": [], "n": []}
        for tag, cache in self._rows.items():
            for key in [k for k in cache if k not in present[tag]]:
                self._pop(tag, key)
            for key, version in present[tag].items():
                old = cache.get(key)
                if old is None or old.version != version:
                    stale[tag].append(key)
        if stale["f"] or stale["n"]:
            for tag, key, version, text in conn.execute(
                    _BODIES, {"f": stale["f"], "n": stale["n"], "node": self.node}).fetchall():
                self._take(tag, key, int(version), text)
            self.queries += 1

    def _statuses(self) -> dict[str, CertStatus]:
        out: dict[str, CertStatus] = {}
        fleet_rows, node_rows = self._rows["f"], self._rows["n"]
        now = self._clock()
        for key in (*fleet_rows, *(k for k in node_rows if k not in fleet_rows)):
            fleet, node = fleet_rows.get(key), node_rows.get(key)
            fv = fleet.version if fleet else -1
            nv = node.version if node else -1
            hit = self._merged.get(key)
            if hit is not None and hit[0] == fv and hit[1] == nv:
                status = hit[2]
            else:
                status = self._merge_row(key, fleet, node, now)
                self._merged[key] = (fv, nv, status)
            if status is not None:
                out[key] = status
        if len(self._merged) > len(out) + 1024:  # forget the merges of vanished keys
            self._merged = {k: v for k, v in self._merged.items()
                            if k in fleet_rows or k in node_rows}
        return out

    def _merge_row(self, key: str, fleet: _Row | None, node: _Row | None,
                   now: datetime) -> CertStatus | None:
        parts = []
        for table, row in (("cert_status", fleet), ("node_status", node)):
            body = row.parsed() if row is not None else None
            if row is not None and body is None:
                log_event("status ignored: its stored body is not a JSON object",
                          level=logging.WARNING, key=key, table=table)
                return None
            if body is not None and body.get("domain") not in (None, key):
                log_event("status ignored: its stored body is about another key",
                          level=logging.WARNING, key=key, table=table,
                          about=str(body.get("domain")))
                return None
            parts.append(body)
        try:
            status = merge(key, parts[0], parts[1])
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "document"
            log_event("status ignored: its stored body is unreadable; the certificate starts "
                      "with a fresh status", level=logging.WARNING, key=key,
                      field=where, error=first["msg"])
            return None
        return _bounded(status, now)

    # -- writing -------------------------------------------------------------------------------

    def save(self, status: CertStatus) -> None:
        """Write the parts of `status` that differ from what this node last loaded/wrote."""
        key = status.domain
        with self._lock:
            seen_f, seen_n = self._rows["f"].get(key), self._rows["n"].get(key)
            fleet_seen = seen_f.parsed() if seen_f else None
            fleet, node = split(status, fleet_seen)
            write_f = fleet_seen is None or fleet != fleet_seen
            node_seen = seen_n.parsed() if seen_n else {"domain": key}  # no row: the defaults
            write_n = node_seen is None or node != node_seen
            if not (write_f or write_n):
                return
            written: list[tuple[str, int, Body]] = []
            with self.db.tx() as conn:
                conn.execute(_WRITE_LIMITS)
                if write_f:
                    # field by field onto the row as it is now: another node's change of a
                    # field this node did not change is kept (no lost update of issued_at,
                    # issuer_ca, a backoff...); a field back at its default leaves the body
                    changed = {k: v for k, v in fleet.items()
                               if fleet_seen is None or fleet_seen.get(k, _UNSET) != v}
                    dropped = [k for k in (fleet_seen or {}) if k not in fleet]
                    got = conn.execute(
                        "INSERT INTO cert_status (key, body, written_by) "
                        "VALUES (%s, %s::jsonb, %s) ON CONFLICT (key) DO UPDATE SET "
                        "body = (cert_status.body - %s::text[]) || %s::jsonb, "
                        "version = EXCLUDED.version, written_by = EXCLUDED.written_by "
                        "RETURNING version, body::text",
                        (key, orjson.dumps(fleet).decode(), self.node, dropped,
                         orjson.dumps(changed).decode())).fetchone()
                    assert got is not None
                    merged_body = orjson.loads(got[1])
                    written.append(("f", int(got[0]), merged_body))
                    Database.notify(conn, "njcm_status", key)
                if write_n:
                    written.append(("n", _version(conn.execute(
                        "INSERT INTO node_status (key, node, body, fingerprint, probed_at) "
                        "VALUES (%s, %s, %s::jsonb, %s, %s) ON CONFLICT (key, node) DO UPDATE "
                        "SET body = EXCLUDED.body, fingerprint = EXCLUDED.fingerprint, "
                        "probed_at = EXCLUDED.probed_at, version = EXCLUDED.version "
                        "RETURNING version",
                        (key, self.node, orjson.dumps(node).decode(),
                         status.applied_fingerprint, status.applied_at)).fetchone()), node))
            for tag, version, body in written:
                self._put(tag, key, _Row(version, "", body))

    def delete(self, domain: str) -> None:
        """Drop this node's part of `domain`'s status, and the fleet part unless the fleet
        still stores a certificate under that key; missing is not an error."""
        with self._lock:
            with self.db.tx() as conn:
                conn.execute(_WRITE_LIMITS)
                conn.execute("DELETE FROM node_status WHERE key = %s AND node = %s",
                             (domain, self.node))
                gone = conn.execute(
                    "DELETE FROM cert_status WHERE key = %s AND NOT EXISTS "
                    "(SELECT 1 FROM certs WHERE certs.key = %s) RETURNING version",
                    (domain, domain)).fetchone()
                if gone is not None:
                    Database.notify(conn, "njcm_status", domain)
            self._pop("n", domain)
            if gone is not None:
                self._pop("f", domain)
            self._merged.pop(domain, None)

    # -- the fleet's view ----------------------------------------------------------------------

    def served_by(self) -> dict[str, list[NodeServes]]:
        """Key -> what every node (live or not) recorded serving, ordered by node name."""
        out: dict[str, list[NodeServes]] = {}
        with self.db.tx() as conn:
            rows = conn.execute("SELECT key, node, fingerprint, probed_at FROM node_status "
                                "ORDER BY key, node").fetchall()
        for key, node, fingerprint, probed_at in rows:
            out.setdefault(key, []).append(NodeServes(node, fingerprint, probed_at))
        return out


def _bounded(status: CertStatus, now: datetime) -> CertStatus:
    """`status` with a backoff beyond MAX_RETRY_AFTER + BACKOFF_CAP read as now + 24 h (as
    statusfile.py does: no hand edit blocks a name for longer)."""
    until = status.backoff_until
    if until is None or until - now <= MAX_RETRY_AFTER + BACKOFF_CAP:
        return status
    bounded = now + MAX_RETRY_AFTER
    log_event("stored backoff is further ahead than any backoff; waiting less",
              level=logging.WARNING, key=status.domain, backoff_until=until.isoformat(),
              instead=bounded.isoformat())
    return replace(status, backoff_until=bounded)


def _version(row: tuple[Any, ...] | None) -> int:
    assert row is not None  # INSERT ... RETURNING always returns the row
    return int(row[0])
