"""The fleet database's foundations against the real PostgreSQL: adapters/pg/db.py (DSN redaction,
error mapping of an unknown database / role / wrong password / closed port, one migration under
four racing nodes, a newer schema refused, read-only commands never migrating, LISTEN with its
reconnect), adapters/pg/crypto.py (sealing private keys, the key file's forms) and the `[store]`
section (controller/storeconfig.py) as controller.config.load_config and App read it.

The password test needs a server that asks for one: the machine's server on 5432 trusts every
local connection, so it adds a scram rule for a throwaway role to the private cluster
(tests/fixtures/pgcluster.py) and takes it out again afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from controller.adapters.pg import migrations
from controller.adapters.pg.crypto import AES_GCM, CLEAR, KeySealer, load_key_file
from controller.adapters.pg.db import Database, shown_dsn
from controller.app import App
from controller.certinfo import generate_private_key
from controller.config import Config, load_config
from controller.errors import ConfigError, StoreError, TemporaryError
from controller.model import KeyType
from tests.fixtures.pg import MACHINE_DSN, dsn_of
from tests.fixtures.pgcluster import pg_cluster  # noqa: F401
from tests.support.hackmods import free_tcp_port
from tests.support.pgcluster import PgCluster

SECRET = "s3cr3t-Pa55word"


def tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                            "ORDER BY tablename").fetchall()
    return [str(r[0]) for r in rows]


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


# -- shown_dsn ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dsn", [
    f"host=db.example.test port=5433 user=njcm password={SECRET} dbname=fleet sslmode=require",
    f"host=db.example.test port=5433 user=njcm password='{SECRET}' dbname=fleet",
    f"postgresql://njcm:{SECRET}@db.example.test:5433/fleet?sslmode=require",
    f"postgres://njcm:{SECRET}@db.example.test:5433/fleet",
    f"postgresql://db.example.test:5433/fleet?user=njcm&password={SECRET}",
])
def test_shown_dsn_keeps_host_and_dbname_never_the_password(dsn: str) -> None:
    shown = shown_dsn(dsn)
    assert SECRET not in shown and "password" not in shown
    assert "db.example.test" in shown and "fleet" in shown and "5433" in shown
    assert Database(dsn).shown == shown


def test_shown_dsn_of_a_percent_encoded_password_hides_both_spellings() -> None:
    shown = shown_dsn("postgresql://njcm:p%40ss%3Aw0rd@db.example.test/fleet")
    assert "p@ss:w0rd" not in shown and "p%40ss" not in shown and "w0rd" not in shown
    assert "db.example.test" in shown and "fleet" in shown


def test_an_unparseable_dsn_is_never_echoed() -> None:
    bad = f"host=db.example.test password='{SECRET}"  # unterminated quote
    assert SECRET not in shown_dsn(bad)
    with pytest.raises(ConfigError) as err:
        Database(bad)
    assert SECRET not in str(err.value) and "[store] dsn" in one_line(err.value)


# -- error mapping ------------------------------------------------------------------------------


def test_an_unknown_database_is_a_config_error_naming_host_and_dbname() -> None:
    name = f"njcm_nosuch_{secrets.token_hex(4)}"
    db = Database(psycopg.conninfo.make_conninfo(dsn_of(name), password=SECRET))
    with pytest.raises(ConfigError) as err, db.tx():
        pass
    text = one_line(err.value)
    assert name in text and "127.0.0.1" in text and "does not exist" in text
    assert SECRET not in text
    assert db.up is False and db.last_error == text


def test_an_unknown_role_is_a_config_error_without_the_password() -> None:
    role = f"njcm_nobody_{secrets.token_hex(4)}"
    db = Database(psycopg.conninfo.make_conninfo(MACHINE_DSN, user=role, password=SECRET))
    with pytest.raises(ConfigError) as err, db.tx():
        pass
    text = one_line(err.value)
    assert role in text and "127.0.0.1" in text and "dbname=postgres" in text
    assert SECRET not in text


@pytest.fixture
def password_role(pg_cluster: PgCluster) -> Iterator[tuple[str, str]]:  # noqa: F811
    """A role that must log in with a password on the private cluster: (role, its DSN base)."""
    pg_cluster.start()
    role = f"njcm_pw_{secrets.token_hex(4)}"
    hba = pg_cluster.data_dir / "pg_hba.conf"
    original = hba.read_text()
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal("the-right-one")))
        with hba.open("r+") as f:  # first match wins: the rule goes before the trust lines
            f.seek(0)
            f.write(f"host all {role} 127.0.0.1/32 scram-sha-256\n{original}")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield role, pg_cluster.dsn()
    finally:
        with hba.open("r+") as f:
            f.truncate(0)
            f.write(original)
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_wrong_password_is_a_config_error_without_the_password(
        password_role: tuple[str, str]) -> None:
    role, base = password_role
    good = Database(psycopg.conninfo.make_conninfo(base, user=role, password="the-right-one"),
                    read_only=True)
    with pytest.raises(migrations.SchemaBehind):  # it got in: the password rule is live
        good.ensure_schema()
    db = Database(psycopg.conninfo.make_conninfo(base, user=role, password=SECRET))
    with pytest.raises(ConfigError) as err, db.tx():
        pass
    text = one_line(err.value)
    assert "password authentication failed" in text and role in text
    assert "127.0.0.1" in text and "dbname=postgres" in text
    assert SECRET not in text and "the-right-one" not in text


def test_a_closed_port_is_a_temporary_error() -> None:
    port = free_tcp_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there
    db = Database(f"host=127.0.0.1 port={port} user=postgres dbname=fleet password={SECRET}")
    with pytest.raises(TemporaryError) as err, db.tx():
        pass
    text = one_line(err.value)
    assert text.startswith("database ") and "connection" in text.lower()
    assert "host=127.0.0.1" in text and f"port={port}" in text and "dbname=fleet" in text
    assert SECRET not in text
    assert db.up is False and db.last_error == text


# -- migrations ---------------------------------------------------------------------------------


def test_four_nodes_racing_on_a_fresh_database_migrate_it_once(pg_dsn: str) -> None:
    dbs = [Database(pg_dsn) for _ in range(4)]
    barrier = threading.Barrier(len(dbs))
    errors: list[BaseException] = []

    def first_tx(db: Database) -> None:
        barrier.wait()
        try:
            with db.tx() as conn:
                conn.execute("SELECT count(*) FROM certs")
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=first_tx, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT version FROM njcm_schema ORDER BY version").fetchall()
    assert rows == [(v,) for v, _, _ in migrations.MIGRATIONS]
    assert sum(1 for db in dbs if db.migrated) == 1  # one node did it, three found it done
    assert {"certs", "leases", "nodes", "njcm_schema"} <= set(tables(pg_dsn))
    for db in dbs:
        db.close()


def test_threads_of_one_node_share_one_schema_check(pg_dsn: str) -> None:
    db = Database(pg_dsn)
    barrier = threading.Barrier(4)
    done: list[int] = []

    def work() -> None:
        barrier.wait()
        with db.tx() as conn:
            row = conn.execute("SELECT count(*) FROM njcm_schema").fetchone()
            assert row is not None
            done.append(int(row[0]))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert done == [migrations.LATEST] * 4
    assert db.up is True and db.last_error is None
    db.close()


def test_a_database_of_a_newer_controller_is_refused(pg_dsn: str) -> None:
    first = Database(pg_dsn)
    first.ensure_schema()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("INSERT INTO njcm_schema (version) VALUES (%s)", (migrations.LATEST + 1,))
    for read_only in (False, True):
        db = Database(pg_dsn, read_only=read_only)
        with pytest.raises(migrations.SchemaTooNew) as err, db.tx():
            pass
        text = one_line(err.value)
        assert "newer" in text and str(migrations.LATEST + 1) in text
        assert db.shown in text
    with psycopg.connect(pg_dsn) as conn:  # nothing was rolled back or added
        count = conn.execute("SELECT count(*) FROM njcm_schema").fetchone()
    assert count == (migrations.LATEST + 1,)
    first.close()


def test_a_read_only_database_on_an_empty_database_migrates_nothing(pg_dsn: str) -> None:
    db = Database(pg_dsn, read_only=True)
    with pytest.raises(migrations.SchemaBehind) as err, db.tx():
        pass
    text = one_line(err.value)
    assert "version 0" in text and "never migrate" in text and db.shown in text
    assert tables(pg_dsn) == []
    assert db.migrated == []
    # a writer migrates it; the read-only one is then content
    Database(pg_dsn).ensure_schema()
    with db.tx() as conn:
        assert conn.execute("SELECT count(*) FROM certs").fetchone() == (0,)


# -- LISTEN -------------------------------------------------------------------------------------


class Heard:
    """What listen() reported: notifications, connection states; `until` waits for a change."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        self.states: list[bool] = []
        self.changed = asyncio.Event()

    def note(self, channel: str, payload: str) -> None:
        self.got.append((channel, payload))
        self.changed.set()

    def state(self, up: bool) -> None:
        self.states.append(up)
        self.changed.set()

    async def until(self, pred: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not pred():
                self.changed.clear()
                await self.changed.wait()


async def test_listen_delivers_notifies_and_resyncs_after_a_reconnect(pg_dsn: str) -> None:
    db = Database(pg_dsn)
    db.ensure_schema()
    heard = Heard()
    got, states = heard.got, heard.states
    task = asyncio.ensure_future(db.listen(["njcm_cert", "njcm_status"], heard.note,
                                           heard.state))
    try:
        await heard.until(lambda: ("njcm_status", "*") in got)
        assert got[:2] == [("njcm_cert", "*"), ("njcm_status", "*")] and states == [True]

        def send(payload: str) -> None:
            with db.tx() as conn:
                Database.notify(conn, "njcm_cert", payload)

        await asyncio.to_thread(send, "a.test")
        await heard.until(lambda: ("njcm_cert", "a.test") in got)

        def terminate() -> int:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND query ILIKE 'LISTEN%'").fetchall()
            return len(rows)

        assert await asyncio.to_thread(terminate) == 1
        mark = len(got)
        await heard.until(lambda: len(states) >= 3 and len(got) >= mark + 2, within=15)
        assert states == [True, False, True]
        assert got[mark:mark + 2] == [("njcm_cert", "*"), ("njcm_status", "*")]
        await asyncio.to_thread(send, "b.test")
        await heard.until(lambda: ("njcm_cert", "b.test") in got)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        db.close()


# -- crypto -------------------------------------------------------------------------------------


def test_seal_and_open_round_trip_with_a_fresh_nonce_each_time() -> None:
    key_pem = generate_private_key(KeyType.EC256)
    sealer = KeySealer(os.urandom(32))
    alg, blob = sealer.seal(key_pem, "a.test")
    alg2, blob2 = sealer.seal(key_pem, "a.test")
    assert alg == alg2 == AES_GCM and sealer.encrypts
    assert blob != blob2 and len(blob) == 12 + len(key_pem) + 16
    assert b"PRIVATE KEY" not in blob
    assert sealer.open_(alg, blob, "a.test") == key_pem
    clear = KeySealer(None)
    assert clear.seal(key_pem, "a.test") == (CLEAR, key_pem) and not clear.encrypts
    assert clear.open_(CLEAR, key_pem, "a.test") == key_pem
    assert sealer.open_(CLEAR, key_pem, "a.test") == key_pem  # migrated before the key file


def _leaks(text: str, key: bytes, key_pem: bytes) -> bool:
    return any(s in text for s in (key.hex(), base64.b64encode(key).decode(),
                                   key.decode("latin-1"), "PRIVATE KEY",
                                   key_pem.decode().splitlines()[1]))


def test_a_row_of_another_label_or_another_key_does_not_open() -> None:
    key, other = os.urandom(32), os.urandom(32)
    key_pem = generate_private_key(KeyType.EC256)
    alg, blob = KeySealer(key).seal(key_pem, "a.test")
    cases = [(KeySealer(key), "b.test"), (KeySealer(other), "a.test"), (KeySealer(None), "a.test")]
    for sealer, label in cases:
        with pytest.raises(StoreError) as err:
            sealer.open_(alg, blob, label)
        text = one_line(err.value)
        assert label in text and not _leaks(text, key, key_pem)
    with pytest.raises(StoreError, match="unknown algorithm"):
        KeySealer(key).open_("rot13", blob, "a.test")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(StoreError):
        KeySealer(key).open_(alg, tampered, "a.test")


def test_load_key_file_accepts_raw_hex_and_base64(tmp_path: Path) -> None:
    key = os.urandom(32)
    forms = {"raw": key, "hex": key.hex().encode() + b"\n",
             "HEX": key.hex().upper().encode(), "b64": base64.b64encode(key) + b"\n"}
    for name, data in forms.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert load_key_file(path) == key, name


@pytest.mark.parametrize("data", [
    os.urandom(16), os.urandom(31), os.urandom(33), os.urandom(64),
    os.urandom(16).hex().encode() + b"\n", base64.b64encode(os.urandom(48)) + b"\n",
    b"", b"not a key at all, just some words\n",
], ids=["raw16", "raw31", "raw33", "raw64", "hex16", "b64-48", "empty", "words"])
def test_load_key_file_refuses_other_lengths_naming_the_file(tmp_path: Path,
                                                             data: bytes) -> None:
    path = tmp_path / "fleet.key"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        load_key_file(path)
    text = one_line(err.value)
    assert str(path) in text and "encryptionKeyFile" in text and "32 bytes" in text


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_key_file(tmp_path / "nope.key")
    assert str(tmp_path / "nope.key") in one_line(err.value)


# -- [store] as the config loads it -------------------------------------------------------------


def load(tmp_path: Path, store: str) -> Config:
    path = tmp_path / "conf" / "cert-manager.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('[njet]\napiAddress = ""\n[store]\n' + store)
    return load_config(path, prefix=tmp_path)


@pytest.mark.parametrize(("store", "needles"), [
    ('backend = "postgres"\n', ["store", "dsn, dsnFile, dsnEnv"]),
    (f'backend = "postgres"\ndsn = "host=x password={SECRET}"\ndsnFile = "f"\n',
     ["store", "got dsn, dsnFile"]),
    ('backend = "postgres"\ndsnEnv = "A"\ndsnFile = "f"\ndsn = "x"\n',
     ["got dsn, dsnFile, dsnEnv"]),
    ('backend = "postgres"\ndsn = "host=x"\nleaseDuration = "4s"\n',
     ["store", "leaseDuration", "5s"]),
    ('backend = "postgres"\ndsn = "host=x"\nnodeTimeout = "9s"\n', ["nodeTimeout", "10s"]),
    (f'dsn = "host=x password={SECRET}"\n', ["store", "dsn is only used with"]),
    ('backend = "mysql"\n', ["store.backend"]),
], ids=["no-source", "two-sources", "three-sources", "short-lease", "short-timeout",
        "dsn-without-postgres", "unknown-backend"])
def test_store_section_errors_name_the_key(tmp_path: Path, store: str,
                                           needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, store)
    text = one_line(err.value)
    for needle in needles:
        assert needle in text, (needle, text)
    assert SECRET not in text and "cert-manager.toml" in text


def test_lease_duration_at_its_minimum_and_the_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'backend = "postgres"\ndsn = "host=x"\nleaseDuration = "5s"\n')
    store = cfg.store
    assert store.fleet and store.leaseDuration.total_seconds() == 5
    assert store.nodeTimeout.total_seconds() == 120
    assert store.node_name(tmp_path) == f"{os.uname().nodename}:{tmp_path}"
    assert store.node_name(tmp_path) == f"{socket.gethostname()}:{tmp_path}"
    named = load(tmp_path, 'backend = "postgres"\ndsn = "host=x"\nnodeName = "edge-1"\n')
    assert named.store.node_name(tmp_path) == "edge-1"
    plain = load(tmp_path, "")
    assert not plain.store.fleet


def test_a_missing_dsn_file_is_named_when_the_node_starts(tmp_path: Path) -> None:
    cfg = load(tmp_path, f'backend = "postgres"\ndsnFile = "secret/{SECRET}.dsn"\n')
    missing = tmp_path / "secret" / f"{SECRET}.dsn"
    with pytest.raises(ConfigError) as err:
        App(cfg)
    text = one_line(err.value)
    assert "[store] dsnFile" in text and str(missing) in text
    missing.parent.mkdir()
    missing.write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        cfg.store.resolve_dsn(tmp_path)
    missing.write_text(f"host=127.0.0.1 password={SECRET} dbname=x\n")
    assert cfg.store.resolve_dsn(tmp_path) == (
        f"host=127.0.0.1 password={SECRET} dbname=x")


def test_an_unset_dsn_env_is_named_when_the_node_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    var = f"NJCM_TEST_DSN_{secrets.token_hex(3).upper()}"
    monkeypatch.delenv(var, raising=False)
    cfg = load(tmp_path, f'backend = "postgres"\ndsnEnv = "{var}"\n')
    with pytest.raises(ConfigError) as err:
        App(cfg)
    text = one_line(err.value)
    assert "[store] dsnEnv" in text and var in text and "dsnFile" in text
    monkeypatch.setenv(var, " host=127.0.0.1 dbname=x ")
    assert cfg.store.resolve_dsn(tmp_path) == "host=127.0.0.1 dbname=x"
