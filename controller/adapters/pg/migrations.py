"""Versioned schema migrations of the fleet database, applied at start under a lock.

Called by db.Database.ensure_schema. `MIGRATIONS` is the ordered list (version, what, SQL); the
database records the version it is at in `njcm_schema`. Applying runs inside one transaction
holding `pg_advisory_xact_lock(LOCK_ID)`, so two nodes starting at once migrate once (the second
waits, then sees the new version). A database at a version newer than the last one here is
refused with SchemaTooNew (an older controller must not write a newer schema's tables); a
read-only check (`diff`) never migrates: it refuses a database that is behind as well.
Embedded as strings, not files, so the single-file binary carries them.
"""

from __future__ import annotations

from typing import Any

import psycopg

from controller.errors import ConfigError

LOCK_ID = 0x6E6A636D  # "njcm": the advisory lock migrations hold

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "fleet mode: nodes, certificates, leases, status, challenges, accounts, ledger, events",
     """
CREATE TABLE nodes (name text PRIMARY KEY, started_at timestamptz NOT NULL,
  heartbeat_at timestamptz NOT NULL, settings_hash text NOT NULL, settings jsonb NOT NULL,
  host text NOT NULL, prefix text NOT NULL, pid int NOT NULL, version text NOT NULL);
CREATE TABLE node_specs (node text NOT NULL, key text NOT NULL, domain text NOT NULL,
  names text[] NOT NULL, spec jsonb NOT NULL, PRIMARY KEY (node, key));
CREATE SEQUENCE cert_version;
CREATE TABLE certs (key text PRIMARY KEY, domain text NOT NULL, cert_pem bytea NOT NULL,
  issuer_pem bytea NOT NULL, key_sealed bytea NOT NULL, key_alg text NOT NULL,
  cert_url text NOT NULL, meta jsonb NOT NULL, fingerprint text NOT NULL, serial text NOT NULL,
  not_after timestamptz NOT NULL, generation bigint NOT NULL,
  version bigint NOT NULL DEFAULT nextval('cert_version'),
  written_by text NOT NULL, written_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE certs_removed (LIKE certs, removed_at timestamptz NOT NULL DEFAULT now(),
  removed_by text NOT NULL);
CREATE TABLE leases (key text PRIMARY KEY, owner text NOT NULL, generation bigint NOT NULL,
  expires_at timestamptz NOT NULL, taken_at timestamptz NOT NULL);
CREATE SEQUENCE status_version;
CREATE TABLE cert_status (key text PRIMARY KEY, body jsonb NOT NULL,
  version bigint NOT NULL DEFAULT nextval('status_version'), written_by text NOT NULL);
CREATE TABLE node_status (key text NOT NULL, node text NOT NULL, body jsonb NOT NULL,
  fingerprint text, probed_at timestamptz,
  version bigint NOT NULL DEFAULT nextval('status_version'), PRIMARY KEY (key, node));
CREATE TABLE challenges (token text PRIMARY KEY, type text NOT NULL, domain text NOT NULL,
  key_authorization text NOT NULL, owner text NOT NULL, expires_at timestamptz NOT NULL);
CREATE TABLE challenge_acks (token text NOT NULL, node text NOT NULL, PRIMARY KEY (token, node));
CREATE TABLE accounts (ca text NOT NULL, email text NOT NULL, path text NOT NULL,
  body_sealed bytea NOT NULL, key_alg text NOT NULL, PRIMARY KEY (ca, email, path));
CREATE TABLE ledger (id bigserial PRIMARY KEY, ca text NOT NULL, at timestamptz NOT NULL,
  event jsonb NOT NULL);
CREATE INDEX ledger_ca_at ON ledger (ca, at);
CREATE TABLE gc_confirm (id int PRIMARY KEY CHECK (id = 1), body jsonb NOT NULL);
CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(),
  node text NOT NULL, kind text NOT NULL, key text, detail jsonb NOT NULL);
"""),
)

LATEST = MIGRATIONS[-1][0]


class SchemaTooNew(ConfigError):
    """The database was migrated by a newer controller than this one."""


class SchemaBehind(ConfigError):
    """A read-only command found a database this version would first have to migrate."""


def current_version(conn: psycopg.Connection[Any]) -> int:
    """The version recorded in the database (0: no fleet schema yet)."""
    row = conn.execute("SELECT to_regclass('njcm_schema') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    got = conn.execute("SELECT max(version) FROM njcm_schema").fetchone()
    return int(got[0]) if got and got[0] is not None else 0


def check(version: int, shown: str, *, read_only: bool) -> None:
    """Refuse a database this code cannot work with (named by `shown`, the DSN without its
    password)."""
    if version > LATEST:
        raise SchemaTooNew(
            f"database {shown} has fleet schema version {version}, newer than this "
            f"njet-cert-manager knows ({LATEST}): upgrade the controller on this node")
    if read_only and version < LATEST:
        raise SchemaBehind(
            f"database {shown} has fleet schema version {version}; this njet-cert-manager "
            f"needs {LATEST}: start a controller (`run` or `reconcile`) once to migrate it "
            "(read-only commands never migrate)")


def migrate(conn: psycopg.Connection[Any], shown: str) -> list[str]:
    """Bring the database to LATEST inside the caller's transaction, holding the advisory
    lock; returns one line per migration applied (none: already current)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
    version = current_version(conn)
    check(version, shown, read_only=False)
    if version == 0:
        conn.execute("CREATE TABLE IF NOT EXISTS njcm_schema (version int NOT NULL)")
    done = []
    for number, what, sql in MIGRATIONS:
        if number <= version:
            continue
        conn.execute(sql.encode())
        conn.execute("INSERT INTO njcm_schema (version) VALUES (%s)", (number,))
        done.append(f"fleet schema migrated to version {number}: {what}")
    return done
