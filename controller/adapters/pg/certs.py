"""The fleet's certificate store: the `certs` table of the fleet database, mirrored into this
node's lego-layout store (`<prefix>/.lego/`, a LegoStore) where NJet and the loop read it.

Built by app.py in fleet mode as the loop's CertStore; `pull` is called by the reconciler at the
start of a pass (and when NOTIFY njcm_cert arrives); `db_fingerprint` by the executor right
before it orders; `fleet_rows` / `export` / `put_unfenced` by the CLI (`certs list`,
`store migrate`). Every method is sync (worker threads) and thread-safe.
- Reads (`recover`, `load_all`, `get`, `key_pem`, `cert_pem`) are the mirror's.
- `put` is the fenced write: the pair is checked as the mirror checks it (so the database never
  holds a key that does not match its certificate), the key is sealed (crypto.KeySealer, label
  = the store key), then ONE transaction checks that this node still holds the lease of the key
  at the generation it took (leases row, FOR UPDATE), upserts the row with that generation
  unless the row carries a newer one, and NOTIFYs njcm_cert. A lost lease refuses with
  StoreError("fenced: ...") and logs "fenced write refused": the certificate is discarded, the
  newer holder's stays. Only then is the mirror written.
- `delete` / `quarantine` move the database row into `certs_removed` (when it still is the
  certificate the mirror holds: a newer one stored by another node stays), then act on the
  mirror.
- `pull(keys)` copies the rows whose certificate differs from the mirror's into the mirror,
  incrementally by `version` (the highest seen; the first pull of a key compares fingerprints).
  Writers take one advisory lock around the version they draw, so versions commit in order and
  the watermark never skips a row. A row whose key does not open or that the mirror refuses
  is logged (naming the key) and tried again at the next pull, never raised; a database that
  cannot be reached, or a mirror that cannot be listed, raises. Pull the keys this node wants:
  `pull()` (every row) would also bring back a key this node deleted while another node keeps
  a newer certificate of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from controller.adapters.pg.crypto import KeySealer
from controller.adapters.pg.db import Database
from controller.adapters.pg.leases import Leases
from controller.adapters.store.lego import LegoStore, checked_pair
from controller.errors import ConfigError, Fenced, StoreError, StoreUnavailable
from controller.faultpoints import fault_point, register
from controller.logs import log_event
from controller.model import CertInfo, IssuedCert, StoredCert
from controller.paths import split_store_key, validate_store_key

FAULT_POINTS = register("fleet.before_db_write", "fleet.after_db_write")
CHANNEL = "njcm_cert"
WRITE_LOCK = 0x6E6A6377  # "njcw": held by every writer of `certs` while it draws a version
WRITE_PATIENCE = 8.0  # seconds a fenced write is retried while the database is away

_COLUMNS = ("key, domain, cert_pem, issuer_pem, key_sealed, key_alg, cert_url, meta, "
            "fingerprint, serial, not_after, generation, written_by")
_VALUES = ("%(key)s, %(domain)s, %(cert_pem)s, %(issuer_pem)s, %(key_sealed)s, %(key_alg)s, "
           "%(cert_url)s, %(meta)s, %(fingerprint)s, %(serial)s, %(not_after)s, "
           "%(generation)s, %(by)s")
_UPSERT = f"""
INSERT INTO certs AS c ({_COLUMNS}) VALUES ({_VALUES})
ON CONFLICT (key) DO UPDATE SET domain = EXCLUDED.domain, cert_pem = EXCLUDED.cert_pem,
  issuer_pem = EXCLUDED.issuer_pem, key_sealed = EXCLUDED.key_sealed,
  key_alg = EXCLUDED.key_alg, cert_url = EXCLUDED.cert_url, meta = EXCLUDED.meta,
  fingerprint = EXCLUDED.fingerprint, serial = EXCLUDED.serial,
  not_after = EXCLUDED.not_after, generation = EXCLUDED.generation,
  version = nextval('cert_version'), written_by = EXCLUDED.written_by, written_at = now()
WHERE c.generation <= EXCLUDED.generation
RETURNING version
"""
_MOVE_OUT = """
WITH gone AS (DELETE FROM certs WHERE key = %s AND fingerprint = %s RETURNING *)
INSERT INTO certs_removed SELECT gone.*, now(), %s FROM gone
"""


@dataclass(frozen=True)
class CertRow:
    """One row of `certs` without its PEMs (`certs list`)."""

    key: str
    fingerprint: str
    serial: str
    not_after: datetime
    written_by: str
    written_at: datetime
    version: int
    generation: int


def _checked(domain: str, issued: IssuedCert) -> CertInfo:
    """The certificate's facts when the mirror would accept the pair; StoreError otherwise."""
    try:
        validate_store_key(domain)
    except ConfigError as exc:
        raise StoreError(f"cannot store a certificate under {domain!r}: {exc}") from None
    return checked_pair(domain, issued)


class FleetCertStore:
    """CertStore over the fleet database with `mirror` as this node's copy (module docstring)."""

    def __init__(self, db: Database, mirror: LegoStore, sealer: KeySealer, node: str,
                 leases: Leases) -> None:
        self.db = db
        self.mirror = mirror
        self.sealer = sealer
        self.node = node
        self.leases = leases
        self._pull_lock = threading.Lock()
        self._mark = 0  # every row of a covered key up to this version was compared
        self._everything = False  # the covered keys are all keys
        self._covered: set[str] = set()
        self._retry: dict[str, str] = {}  # key -> why its last copy into the mirror failed

    # -- reads: the mirror's --------------------------------------------------------------------

    def recover(self) -> list[str]:
        return self.mirror.recover()

    def load_all(self) -> tuple[Mapping[str, StoredCert], Mapping[str, str]]:
        return self.mirror.load_all()

    def get(self, domain: str) -> StoredCert | None:
        return self.mirror.get(domain)

    def key_pem(self, domain: str) -> bytes | None:
        return self.mirror.key_pem(domain)

    def cert_pem(self, domain: str) -> bytes | None:
        return self.mirror.cert_pem(domain)

    # -- writes -------------------------------------------------------------------------------

    def _row(self, domain: str, issued: IssuedCert, info: CertInfo, generation: int,
             by: str) -> dict[str, Any]:
        alg, sealed = self.sealer.seal(issued.key_pem, label=domain)
        return {"key": domain, "domain": split_store_key(domain)[0], "cert_pem": issued.cert_pem,
                "issuer_pem": issued.issuer_pem, "key_sealed": sealed, "key_alg": alg,
                "cert_url": issued.cert_url,
                "meta": Jsonb({"profile": issued.profile, "ca_profile": issued.ca_profile}),
                "fingerprint": info.fingerprint, "serial": info.serial,
                "not_after": info.not_after, "generation": generation, "by": by}

    def _refuse(self, domain: str, generation: int | None, why: str) -> Fenced:
        log_event("fenced write refused", level=logging.ERROR, key=domain, generation=generation)
        return Fenced(f"fenced: {why}; a newer certificate may exist; this one is discarded")

    def put(self, domain: str, issued: IssuedCert) -> StoredCert:
        """The fenced write (see the module docstring); returns what the mirror now holds."""
        lease = self.leases.held(domain)
        if lease is None:
            raise self._refuse(domain, None, f"this node holds no lease on {domain}")
        info = _checked(domain, issued)
        row = self._row(domain, issued, info, lease.generation, self.node)
        lost = f"the lease on {domain} was lost (generation {lease.generation})"
        fault_point("fleet.before_db_write")
        delay, waited = 0.25, 0.0
        while True:  # a database restarting (about a second) does not cost the new order
            try:
                self._fenced_write(domain, row, lease.generation, lost)
                break
            except StoreUnavailable:
                if waited >= WRITE_PATIENCE:
                    raise
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 2.0)
        fault_point("fleet.after_db_write")
        return self.mirror.put(domain, issued)

    def _fenced_write(self, domain: str, row: Mapping[str, Any], generation: int,
                      lost: str) -> None:
        """One transaction: the lease is still ours at `generation`, then the upsert (the
        same row again after a commit whose answer was lost is a no-op) and the NOTIFY."""
        with self.db.tx() as conn:
            ours = conn.execute(
                "SELECT 1 FROM leases WHERE key = %s AND owner = %s AND generation = %s "
                "AND expires_at > now() FOR UPDATE",
                (domain, self.node, generation)).fetchone()
            if ours is None:
                raise self._refuse(domain, generation, lost)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            if conn.execute(_UPSERT, row).fetchone() is None:
                raise self._refuse(domain, generation,
                                   f"the database holds {domain} of a newer lease generation")
            Database.notify(conn, CHANNEL, domain)

    def put_unfenced(self, domain: str, issued: IssuedCert, *, by: str) -> bool:
        """Store without a lease, generation 0 (`store migrate`): only where the database holds
        nothing for `domain`, or this very certificate (then nothing is written: False). A
        different certificate there is never overwritten (StoreError). The mirror is left."""
        info = _checked(domain, issued)
        row = self._row(domain, issued, info, 0, by)
        with self.db.tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            there = conn.execute("SELECT fingerprint FROM certs WHERE key = %s FOR UPDATE",
                                 (domain,)).fetchone()
            if there is not None:
                if there[0] == info.fingerprint:
                    return False
                raise StoreError(f"refusing to migrate {domain}: the fleet database holds "
                                 f"another certificate of it (sha256 {str(there[0])[:16]}...)")
            conn.execute(_UPSERT, row)
            Database.notify(conn, CHANNEL, domain)
        return True

    def _mirror_fingerprint(self, domain: str) -> str | None:
        try:
            stored = self.mirror.get(domain)
        except StoreError:
            return None
        return stored.info.fingerprint if stored is not None else None

    def _move_out(self, domain: str) -> None:
        """Move the row of `domain` into certs_removed if it is the mirror's certificate."""
        fingerprint = self._mirror_fingerprint(domain)
        if fingerprint is None:
            return
        with self.db.tx() as conn:
            if conn.execute(_MOVE_OUT, (domain, fingerprint, self.node)).rowcount:
                Database.notify(conn, CHANNEL, domain)

    def delete(self, domain: str) -> bool:
        self._move_out(domain)
        return self.mirror.delete(domain)

    def quarantine(self, domain: str) -> str | None:
        self._move_out(domain)
        return self.mirror.quarantine(domain)

    # -- the mirror ---------------------------------------------------------------------------

    def pull(self, keys: Collection[str] | None = None) -> list[str]:
        """Copy into the mirror the rows of `keys` (None: all) whose certificate differs from
        the mirror's; returns the keys written. One small query when nothing changed."""
        with self._pull_lock:
            wanted = None if keys is None else set(keys)
            if wanted is not None and not wanted:
                return []
            rows = self._changed(wanted)
            mark = max([self._mark, *(version for _, _, version in rows)])
            if wanted is None:
                self._everything = True
            elif mark > self._mark:  # keys outside `wanted` are not compared up to `mark`
                self._everything, self._covered = False, wanted
            elif not self._everything:
                self._covered |= wanted
            self._mark = mark
            retried = set(self._retry) & (wanted if wanted is not None else set(self._retry))
            for key in retried - {key for key, _, _ in rows}:
                del self._retry[key]  # the row is gone
            differ = self._differing(rows)
            return self._copy(differ) if differ else []

    def _changed(self, wanted: set[str] | None) -> list[tuple[str, str, int]]:
        """(key, fingerprint, version) of every row that may differ from the mirror."""
        params: tuple[Any, ...]
        if wanted is None and not self._everything:
            query, params = "SELECT key, fingerprint, version FROM certs", ()
        elif wanted is None:
            query = "SELECT key, fingerprint, version FROM certs WHERE version > %s " \
                    "OR key = ANY(%s)"
            params = (self._mark, sorted(self._retry))
        else:
            fresh = wanted & set(self._retry)
            if not self._everything:
                fresh |= wanted - self._covered
            query = "SELECT key, fingerprint, version FROM certs " \
                    "WHERE (key = ANY(%s) AND version > %s) OR key = ANY(%s)"
            params = (sorted(wanted - fresh), self._mark, sorted(fresh))
        with self.db.tx() as conn:
            got = conn.execute(query, params).fetchall()
        return [(str(k), str(f), int(v)) for k, f, v in got]

    def _differing(self, rows: list[tuple[str, str, int]]) -> list[str]:
        if not rows:
            return []
        usable, _problems = self.mirror.load_all()
        out = []
        for key, fingerprint, _ in rows:
            have = usable.get(key)
            if have is None or not have.key_matches or have.info.fingerprint != fingerprint:
                out.append(key)
            else:
                self._retry.pop(key, None)
        return out

    def _copy(self, keys: list[str]) -> list[str]:
        with self.db.tx() as conn:
            rows = conn.execute(
                "SELECT key, cert_pem, issuer_pem, key_sealed, key_alg, cert_url, meta "
                "FROM certs WHERE key = ANY(%s) ORDER BY key", (keys,)).fetchall()
        written = []
        for key, cert_pem, issuer_pem, sealed, alg, cert_url, meta in rows:
            try:
                issued = self._issued(str(key), cert_pem, issuer_pem, sealed, str(alg),
                                      str(cert_url), meta)
                self.mirror.put(str(key), issued)
            except StoreError as exc:
                if self._retry.get(key) != str(exc):
                    log_event("fleet certificate not copied into this node's store",
                              level=logging.WARNING, key=key, error=str(exc))
                self._retry[key] = str(exc)
                continue
            self._retry.pop(key, None)
            written.append(str(key))
        return written

    def _issued(self, key: str, cert_pem: bytes, issuer_pem: bytes, sealed: bytes, alg: str,
                cert_url: str, meta: Any) -> IssuedCert:
        key_pem = self.sealer.open_(alg, bytes(sealed), label=key)
        meta = meta if isinstance(meta, dict) else {}
        profile = meta.get("profile")
        ca_profile = meta.get("ca_profile")
        return IssuedCert(cert_pem=bytes(cert_pem), issuer_pem=bytes(issuer_pem),
                          key_pem=key_pem, cert_url=cert_url,
                          profile=profile if isinstance(profile, str) else "",
                          ca_profile=ca_profile if isinstance(ca_profile, str) else None)

    # -- the database's view ------------------------------------------------------------------

    def db_fingerprint(self, key: str) -> str | None:
        """The fingerprint of the certificate the database holds for `key` right now."""
        with self.db.tx() as conn:
            row = conn.execute("SELECT fingerprint FROM certs WHERE key = %s", (key,)).fetchone()
        return str(row[0]) if row is not None else None

    def fleet_rows(self) -> list[CertRow]:
        """Every row of `certs` by key, without PEMs."""
        with self.db.tx() as conn:
            rows = conn.execute(
                "SELECT key, fingerprint, serial, not_after, written_by, written_at, version, "
                "generation FROM certs ORDER BY key").fetchall()
        return [CertRow(str(r[0]), str(r[1]), str(r[2]), r[3].astimezone(UTC), str(r[4]),
                        r[5].astimezone(UTC), int(r[6]), int(r[7])) for r in rows]

    def export(self, key: str) -> IssuedCert | None:
        """The pair the database holds for `key`, key opened (StoreError when it does not)."""
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT cert_pem, issuer_pem, key_sealed, key_alg, cert_url, meta FROM certs "
                "WHERE key = %s", (key,)).fetchone()
        if row is None:
            return None
        return self._issued(key, row[0], row[1], row[2], str(row[3]), str(row[4]), row[5])

    def removed_rows(self) -> list[tuple[str, str, str]]:
        """(key, fingerprint, removed_by) of every row moved out, newest first."""
        with self.db.tx() as conn:
            rows = conn.execute("SELECT key, fingerprint, removed_by FROM certs_removed "
                                "ORDER BY removed_at DESC").fetchall()
        return [(str(k), str(f), str(b)) for k, f, b in rows]
