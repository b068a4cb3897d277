"""The fleet store over the real PostgreSQL: FleetCertStore (fenced writes, sealed keys, pull
into each node's own lego mirror, delete / quarantine into certs_removed, migration writes),
the account sync, the gc confirmation and the rate-limit ledger (adapters/pg/)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller import faultpoints
from controller.adapters.pg.accounts import AccountSync
from controller.adapters.pg.certs import FleetCertStore
from controller.adapters.pg.crypto import AES_GCM, KeySealer
from controller.adapters.pg.db import Database
from controller.adapters.pg.gcconfirm import PgGcConfirmations
from controller.adapters.pg.leases import Leases
from controller.adapters.pg.ledger import PgLedger
from controller.adapters.store.lego import LegoStore
from controller.errors import StoreError
from controller.model import IssuedCert
from controller.paths import StorePaths
from controller.policies.ratelimits import EventKind, LedgerEvent
from controller.policy import GcRelease
from tests.certbuilder import make_cert
from tests.fixtures.pg import pg_dsn  # noqa: F401
from tests.logcapture import capture_logs

MINUTE = timedelta(minutes=1)
CA = "https://acme-v02.api.letsencrypt.org/directory"


@dataclass
class Node:
    name: str
    db: Database
    mirror: LegoStore
    leases: Leases
    store: FleetCertStore
    prefix: Path


class Fleet:
    """Nodes sharing one database, each with its own prefix (its own lego mirror)."""

    def __init__(self, dsn: str, root: Path) -> None:
        self.dsn, self.root = dsn, root
        self.key = os.urandom(32)
        self.nodes: list[Node] = []

    def node(self, name: str, key: bytes | None = None) -> Node:
        db = Database(self.dsn)
        prefix = self.root / name
        prefix.mkdir()
        mirror = LegoStore(StorePaths(prefix))
        leases = Leases(db, name, MINUTE)
        sealer = KeySealer(key if key is not None else self.key)
        node = Node(name, db, mirror, leases, FleetCertStore(db, mirror, sealer, name, leases),
                    prefix)
        self.nodes.append(node)
        return node

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.nodes[0].db.tx() as conn:
            cur = conn.execute(query.encode(), params)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def fleet(pg_dsn: str, tmp_path: Path) -> Iterator[Fleet]:  # noqa: F811
    f = Fleet(pg_dsn, tmp_path)
    yield f
    for n in f.nodes:
        n.db.close()


def expire(fleet: Fleet, key: str) -> None:
    fleet.sql("UPDATE leases SET expires_at = now() - interval '1 second' WHERE key = %s",
              (key,))


def count_tx(node: Node, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the transactions `node` opens from now on."""
    calls = [0]
    real = node.db.tx

    def counted() -> AbstractContextManager[Any]:
        calls[0] += 1
        return real()

    monkeypatch.setattr(node.db, "tx", counted)
    return calls


async def test_lost_lease_refuses_the_put_and_the_newer_cert_stays(fleet: Fleet) -> None:
    a, b = fleet.node("node-a"), fleet.node("node-b")
    old, new = make_cert(["a.test"]), make_cert(["a.test"])
    with capture_logs() as logs:
        async with a.leases.hold("a.test") as lease_a:
            expire(fleet, "a.test")  # a stalls past its lease; b takes over and stores
            async with b.leases.hold("a.test") as lease_b:
                assert lease_b.generation == lease_a.generation + 1
                b.store.put("a.test", new.issued())
            with pytest.raises(StoreError) as caught:
                a.store.put("a.test", old.issued())
    assert str(caught.value).startswith("fenced: the lease on a.test was lost (generation 1)")
    refused = [r for r in logs.records if r.getMessage() == "fenced write refused"]
    assert [getattr(r, "fields", None) for r in refused] == [{"key": "a.test", "generation": 1}]
    fp_new = b.store.get("a.test")
    assert fp_new is not None
    assert a.store.db_fingerprint("a.test") == fp_new.info.fingerprint
    assert a.store.get("a.test") is None  # the discarded certificate never reached a's mirror
    rows = a.store.fleet_rows()
    assert [(r.key, r.generation, r.written_by) for r in rows] == [("a.test", 2, "node-b")]
    with pytest.raises(StoreError, match=r"^fenced: this node holds no lease on a\.test"):
        a.store.put("a.test", old.issued())  # outside any hold


async def test_put_seals_the_key_and_another_node_pulls_the_same_pair(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = fleet.node("node-a"), fleet.node("node-b")
    cert = make_cert(["a.test", "www.a.test"])
    issued = IssuedCert(cert.fullchain_pem, cert.chain_pem, cert.key_pem,
                        "https://ca.test/cert/7", profile="shortlived", ca_profile="shortlived")
    with faultpoints.recording() as reached:
        async with a.leases.hold("a.test"):
            stored = a.store.put("a.test", issued)
    ours = [p for p in reached if p.startswith(("lease.", "fleet."))]
    assert ours == ["lease.after_acquire", "fleet.before_db_write", "fleet.after_db_write"]
    assert reached.index("fleet.after_db_write") < reached.index("store.put.after_stage_crt")
    assert stored.key_matches
    [(sealed, alg, meta)] = fleet.sql("SELECT key_sealed, key_alg, meta FROM certs")
    assert alg == AES_GCM and b"PRIVATE KEY" not in bytes(sealed)
    assert cert.key_pem not in bytes(sealed)
    assert meta == {"profile": "shortlived", "ca_profile": "shortlived"}
    assert b.store.get("a.test") is None
    assert b.store.pull() == ["a.test"]
    for read in ("key_pem", "cert_pem"):
        assert getattr(b.store, read)("a.test") == getattr(a.store, read)("a.test")
    assert b.mirror.paths.issuer("a.test").read_bytes() == cert.chain_pem
    assert oct(b.mirror.paths.key("a.test").stat().st_mode & 0o777) == "0o600"
    exported = b.store.export("a.test")
    assert exported is not None and exported.key_pem == cert.key_pem
    assert (exported.profile, exported.ca_profile) == ("shortlived", "shortlived")
    # nothing changed: one small query, nothing written
    crt = b.mirror.paths.cert("a.test")
    before = crt.stat().st_mtime_ns
    calls = count_tx(b, monkeypatch)
    assert b.store.pull() == []
    assert calls == [1] and crt.stat().st_mtime_ns == before
    # a renewal on a: b's next pull copies it, and only it
    renewed = make_cert(["a.test", "www.a.test"])
    async with a.leases.hold("a.test"):
        a.store.put("a.test", renewed.issued())
    assert b.store.pull(["a.test"]) == ["a.test"]
    assert b.store.cert_pem("a.test") == renewed.fullchain_pem


async def test_pull_by_keys_catches_up_on_keys_wanted_later(fleet: Fleet) -> None:
    a, b = fleet.node("node-a"), fleet.node("node-b")
    for name in ("a.test", "b.test", "*.c.test"):
        async with a.leases.hold(name):
            a.store.put(name, make_cert([name]).issued())
    assert b.store.pull(["a.test"]) == ["a.test"]
    async with a.leases.hold("d.test"):
        a.store.put("d.test", make_cert(["d.test"]).issued())
    assert b.store.pull(["a.test"]) == []
    assert b.store.pull(["a.test", "b.test"]) == ["b.test"]  # older than the watermark
    assert sorted(b.store.pull()) == ["*.c.test", "d.test"]
    assert b.store.pull() == [] and b.store.pull(["b.test"]) == []
    usable, problems = b.store.load_all()
    assert sorted(usable) == ["*.c.test", "a.test", "b.test", "d.test"] and not problems


async def test_cold_start_pull_fetches_only_what_differs(fleet: Fleet) -> None:
    a = fleet.node("node-a")
    for name in ("a.test", "b.test"):
        async with a.leases.hold(name):
            a.store.put(name, make_cert([name]).issued())
    restarted = fleet.node("node-a2")  # a fresh process, mirror copied from a's
    for name in ("a.test",):
        restarted.mirror.put(name, IssuedCert(a.store.cert_pem(name) or b"", b"",
                                              a.store.key_pem(name) or b"", "u"))
    assert restarted.store.pull() == ["b.test"]


async def test_a_key_that_does_not_open_is_logged_and_skipped(fleet: Fleet) -> None:
    a, c = fleet.node("node-a"), fleet.node("node-c", key=os.urandom(32))
    async with a.leases.hold("a.test"):
        a.store.put("a.test", make_cert(["a.test"]).issued())
    with capture_logs() as logs:
        assert c.store.pull() == []
        assert c.store.pull() == []  # tried again, not logged again
    warned = [r for r in logs.records
              if r.getMessage() == "fleet certificate not copied into this node's store"]
    assert len(warned) == 1
    assert getattr(warned[0], "fields", {})["key"] == "a.test"
    assert "encryptionKeyFile" in logs.text and "PRIVATE" not in logs.text
    assert c.store.get("a.test") is None
    assert not c.mirror.paths.certificates.exists() or not any(
        c.mirror.paths.certificates.iterdir())
    with pytest.raises(StoreError, match=r"a\.test"):
        c.store.export("a.test")


async def test_a_mismatched_pair_is_refused_before_the_database(fleet: Fleet) -> None:
    a = fleet.node("node-a")
    one, other = make_cert(["a.test"]), make_cert(["a.test"])
    bad = IssuedCert(one.fullchain_pem, one.chain_pem, other.key_pem, "u")
    with faultpoints.recording() as reached:
        async with a.leases.hold("a.test"):
            with pytest.raises(StoreError, match="key does not match"):
                a.store.put("a.test", bad)
    assert "fleet.before_db_write" not in reached
    assert a.store.db_fingerprint("a.test") is None and a.store.get("a.test") is None
    with pytest.raises(StoreError, match="key does not match"):
        a.store.put_unfenced("a.test", bad, by="migrate")


async def test_delete_and_quarantine_move_the_row_into_certs_removed(fleet: Fleet) -> None:
    a, b = fleet.node("node-a"), fleet.node("node-b")
    for name in ("a.test", "b.test"):
        async with a.leases.hold(name):
            a.store.put(name, make_cert([name]).issued())
    fp = a.store.db_fingerprint("a.test")
    assert a.store.delete("a.test") is True
    assert a.store.db_fingerprint("a.test") is None and a.store.get("a.test") is None
    assert a.store.removed_rows() == [("a.test", fp, "node-a")]
    where = a.store.quarantine("b.test")
    assert where is not None and where.startswith(str(a.mirror.paths.quarantine))
    assert a.store.db_fingerprint("b.test") is None
    assert {k for k, _, _ in a.store.removed_rows()} == {"a.test", "b.test"}
    assert a.store.delete("a.test") is False  # nothing left anywhere: not an error
    # b mirrored an older c.test, then a stored a newer one: b's delete leaves the DB row
    async with a.leases.hold("c.test"):
        a.store.put("c.test", make_cert(["c.test"]).issued())
    assert b.store.pull(["c.test"]) == ["c.test"]
    async with a.leases.hold("c.test"):
        a.store.put("c.test", make_cert(["c.test"]).issued())
    newer = a.store.db_fingerprint("c.test")
    assert b.store.delete("c.test") is True
    assert b.store.db_fingerprint("c.test") == newer and b.store.get("c.test") is None


async def test_put_unfenced_never_overwrites_another_cert(fleet: Fleet) -> None:
    a = fleet.node("node-a")
    first, second = make_cert(["a.test"]), make_cert(["a.test"])
    assert a.store.put_unfenced("a.test", first.issued(), by="migrate node-a") is True
    assert a.store.get("a.test") is None  # the mirror is not touched
    assert a.store.put_unfenced("a.test", first.issued(), by="migrate node-a") is False
    with pytest.raises(StoreError, match=r"refusing to migrate a\.test"):
        a.store.put_unfenced("a.test", second.issued(), by="migrate node-a")
    rows = a.store.fleet_rows()
    assert [(r.generation, r.written_by) for r in rows] == [(0, "migrate node-a")]
    assert rows[0].not_after.utcoffset() == timedelta(0)
    async with a.leases.hold("a.test"):  # an order's lease (generation >= 1) replaces it
        a.store.put("a.test", second.issued())
    stored = a.store.get("a.test")
    assert stored is not None and a.store.db_fingerprint("a.test") == stored.info.fingerprint


def test_ledger_round_trip_between_two_nodes(fleet: Fleet) -> None:
    a, b = fleet.node("node-a"), fleet.node("node-b")
    now = datetime.now(UTC)
    mine, theirs = PgLedger(a.db, CA), PgLedger(b.db, CA)
    old = LedgerEvent(EventKind.ORDER, now - timedelta(days=8), CA, "ops@x.test", ("a.test",),
                      ("a.test",), issued=True)
    limited = LedgerEvent(EventKind.RATE_LIMITED, now - timedelta(days=9), CA, "ops@x.test",
                          ("b.test",), until=now + timedelta(hours=1))
    order = LedgerEvent(EventKind.ORDER, now, CA, "ops@x.test", ("a.test", "www.a.test"),
                        ("a.test",), issued=True)
    for event in (old, limited, order):
        mine.record(event)
    snap = theirs.snapshot(now)
    assert snap.ca == CA and snap.events == (limited, order)  # the 8-day-old one is pruned
    assert fleet.sql("SELECT count(*) FROM ledger") == [(2,)]
    PgLedger(b.db, "https://other.test/dir").record(
        LedgerEvent(EventKind.FAILED_VALIDATION, now, "https://other.test/dir", "", ("c.test",)))
    assert theirs.snapshot(now).events == (limited, order)
    with pytest.raises(ValueError, match="cannot record"):
        mine.record(LedgerEvent(EventKind.ORDER, now, "https://other.test/dir", "", ("x",)))
    down = PgLedger(Database("host=127.0.0.1 port=1 user=postgres connect_timeout=2"), CA)
    with capture_logs() as logs:
        assert down.snapshot(now).events == ()
    assert "rate-limit ledger unusable" in logs.text


def test_gc_confirmation_save_load_consume(fleet: Fleet) -> None:
    a, b = fleet.node("node-a"), fleet.node("node-b")
    mine, theirs = PgGcConfirmations(a.db), PgGcConfirmations(b.db)
    assert theirs.load() is None
    release = GcRelease(frozenset({"a.test", "b.test@ecc"}), datetime.now(UTC), by="cli")
    mine.save(release, stored=3)
    assert theirs.load() == release
    [(body,)] = fleet.sql("SELECT body FROM gc_confirm")
    assert body["names"] == ["a.test", "b.test@ecc"] and body["stored"] == 3
    newer = GcRelease(frozenset({"a.test"}), datetime.now(UTC), by="admin 127.0.0.1")
    assert theirs.consume(newer) is False and theirs.load() == release
    assert theirs.consume(release) is True
    assert mine.load() is None and mine.consume(release) is False
    fleet.sql("INSERT INTO gc_confirm (id, body) VALUES (1, '{\"names\": 3}')")
    with capture_logs() as logs:
        assert mine.load() is None
    assert "gc confirmation ignored" in logs.text


def test_accounts_travel_sealed_and_local_accounts_win(fleet: Fleet) -> None:
    a, b = fleet.node("node-a"), fleet.node("node-b")
    sealer = KeySealer(fleet.key)
    src = a.prefix / ".lego" / "accounts"
    email_dir = src / "acme-v02.api.letsencrypt.org" / "ops@x.test"
    (email_dir / "keys").mkdir(parents=True)
    key_pem = make_cert(["x.test"]).key_pem
    (email_dir / "keys" / "ops@x.test.key").write_bytes(key_pem)
    (email_dir / "account.json").write_bytes(b'{"email": "ops@x.test"}\n')
    (email_dir / ".account.json.tmp-1234").write_bytes(b"half")
    push = AccountSync(a.db, sealer, src)
    assert push.push() == 2 and push.push() == 0  # unchanged: nothing written
    rows = fleet.sql("SELECT ca, email, path, body_sealed, key_alg FROM accounts ORDER BY path")
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("acme-v02.api.letsencrypt.org", "ops@x.test",
         "acme-v02.api.letsencrypt.org/ops@x.test/account.json", "none"),
        ("acme-v02.api.letsencrypt.org", "ops@x.test",
         "acme-v02.api.letsencrypt.org/ops@x.test/keys/ops@x.test.key", AES_GCM)]
    assert b"PRIVATE KEY" not in bytes(rows[1][3])
    dst = b.prefix / ".lego" / "accounts"
    pull = AccountSync(b.db, sealer, dst)
    assert pull.pull() == 2 and pull.pull() == 0
    got = dst / "acme-v02.api.letsencrypt.org" / "ops@x.test" / "keys" / "ops@x.test.key"
    assert got.read_bytes() == key_pem and oct(got.stat().st_mode & 0o777) == "0o600"
    assert oct(got.parent.stat().st_mode & 0o777) == "0o700"
    # a node with its own, different registration keeps it
    (dst / "acme-v02.api.letsencrypt.org" / "ops@x.test" / "account.json").write_bytes(b"{}")
    with capture_logs() as logs:
        assert pull.pull() == 0
    assert "keeping the local one" in logs.text
    assert (dst / "acme-v02.api.letsencrypt.org" / "ops@x.test" / "account.json"
            ).read_bytes() == b"{}"
    # ... and pushing it does not replace the fleet's, unless asked to
    with capture_logs() as logs:
        assert pull.push() == 0
    assert "the fleet keeps its own" in logs.text
    assert AccountSync(fleet.nodes[0].db, sealer, b.prefix / "third").pull() == 2
    assert (b.prefix / "third" / "acme-v02.api.letsencrypt.org" / "ops@x.test" / "account.json"
            ).read_bytes() == b'{"email": "ops@x.test"}\n'
    assert pull.push(replace=True) == 2
    [(body,)] = fleet.sql("SELECT body_sealed FROM accounts WHERE path LIKE '%%account.json'")
    assert bytes(body) == b"{}"
    # a node with another encryption key cannot open the account key: logged, skipped
    other = AccountSync(b.db, KeySealer(os.urandom(32)), b.prefix / "elsewhere")
    with capture_logs() as logs:
        assert other.pull() == 1  # the clear account.json only
    assert "fleet account file not written" in logs.text and "PRIVATE" not in logs.text
