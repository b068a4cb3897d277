"""PgStatus (controller/adapters/pg/status.py) over the machine's real PostgreSQL: the fleet /
node split, what one node's status shows another, writes only on change, incremental loads,
a cold load of 10,000 statuses, delete semantics and `served_by`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.adapters.pg import status as pgstatus
from controller.adapters.pg.db import Database
from controller.adapters.pg.status import PgStatus, merge, split
from controller.status import (
    FAILURE_NODE,
    ISSUING,
    READY,
    AriState,
    CaStreak,
    CertStatus,
    Condition,
)
from tests.fixtures.pg import pg_dsn  # noqa: F401
from tests.logcapture import capture_logs

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def full_status(domain: str = "shop.test", *, scope: str | None = FAILURE_NODE) -> CertStatus:
    """A status with every field set."""
    return CertStatus(
        domain=domain, attempts=3, last_failure="NJet refused the PUT", last_failure_at=T0,
        backoff_until=T0 + timedelta(minutes=4), failure_scope=scope, spec_hash="abc123",
        renewal_at=T0 + timedelta(days=20), renewal_source="ari", renewal_for="f" * 64,
        ari=AriState(fingerprint="f" * 64, cert_id="id.1", next_poll=T0 + timedelta(hours=6),
                     window_start=T0 + timedelta(days=19), window_end=T0 + timedelta(days=21),
                     explanation_url="https://ca.test/why", polled_at=T0, errors=1,
                     last_error="timeout"),
        applied_fingerprint="a" * 64, applied_at=T0 - timedelta(hours=1),
        last_success_at=T0 - timedelta(hours=1), orphaned_at=T0 - timedelta(days=2),
        force_renew=True, force_renew_of="f" * 64, forced_renewals=(T0 - timedelta(minutes=5),),
        issued_at=T0 - timedelta(days=10), issuer_ca="https://ca.test/dir",
        ca_failures=(CaStreak("https://ca.test/dir", 2),), profile="shortlived",
        profile_ordered="shortlived", profile_ca="shortlived", new_key=True,
        conditions=(Condition(READY, "True", "Served", "NJet serves it", T0),
                    Condition(ISSUING, "False", "UpToDate", "nothing to do", T0)),
    )


@pytest.fixture
def db(pg_dsn: str) -> Iterator[Database]:  # noqa: F811
    d = Database(pg_dsn)
    yield d
    d.close()


def rows(db: Database, sql: str, *args: object) -> list[tuple[object, ...]]:
    with db.tx() as conn:
        return conn.execute(sql, args).fetchall()


# -- the pure split --------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [FAILURE_NODE, None])
def test_split_merge_round_trip_with_every_field_set(scope: str | None) -> None:
    status = full_status(scope=scope)
    fleet, node = split(status)
    assert merge(status.domain, fleet, node) == status
    assert "applied_fingerprint" not in fleet and "conditions" not in fleet
    assert node["applied_fingerprint"] == "a" * 64
    if scope == FAILURE_NODE:
        assert node["backoff_until"] is not None and "backoff_until" not in fleet
        assert "attempts" not in fleet and node["attempts"] == 3
    else:
        assert "backoff_until" not in node and fleet["attempts"] == 3


_instants = st.none() | st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(attempts=st.integers(0, 50), until=_instants, applied=_instants,
       scope=st.sampled_from([None, FAILURE_NODE]), fp=st.none() | st.text("0123456789abcdef"),
       orphaned=_instants, force=st.booleans())
def test_split_merge_round_trip_property(attempts: int, until: datetime | None,
                                         applied: datetime | None, scope: str | None,
                                         fp: str | None, orphaned: datetime | None,
                                         force: bool) -> None:
    status = CertStatus(domain="p.test", attempts=attempts, backoff_until=until,
                        failure_scope=scope, applied_fingerprint=fp, applied_at=applied,
                        orphaned_at=orphaned, force_renew=force, last_failure="x")
    fleet, node = split(status)
    assert merge("p.test", fleet, node) == status


def test_merge_takes_the_later_backoff() -> None:
    order_failed = CertStatus(domain="m.test", attempts=2, last_failure="order",
                              backoff_until=T0 + timedelta(hours=1))
    fleet, _ = split(order_failed)
    apply_failed = CertStatus(domain="m.test", attempts=1, last_failure="apply",
                              backoff_until=T0 + timedelta(minutes=1), failure_scope=FAILURE_NODE)
    _, node = split(apply_failed, fleet)
    merged = merge("m.test", fleet, node)
    assert merged.last_failure == "order" and merged.failure_scope is None
    later = CertStatus(domain="m.test", attempts=5, last_failure="apply",
                       backoff_until=T0 + timedelta(hours=2), failure_scope=FAILURE_NODE)
    _, node = split(later, fleet)
    assert merge("m.test", fleet, node).last_failure == "apply"
    assert merge("m.test", None, None) == CertStatus(domain="m.test")


# -- two nodes over one database -------------------------------------------------------------


def test_what_one_node_shows_another(db: Database) -> None:
    a, b = PgStatus(db, "node-a"), PgStatus(db, "node-b")
    assert a.load_all() == {} and b.load_all() == {}
    a.save(CertStatus(domain="shop.test", spec_hash="h1").with_applied("a" * 64, at=T0))
    seen = b.load_all()["shop.test"]
    assert seen.spec_hash == "h1"
    assert seen.applied_fingerprint is None and seen.applied_at is None  # A's apply: A's own

    # A's order fails: the whole fleet backs off
    failed = a.load_all()["shop.test"].with_failure("CA said no", spec_hash="h1", at=T0,
                                                    retry_after=None)
    a.save(failed)
    seen = b.load_all()["shop.test"]
    assert seen.backoff_until == failed.backoff_until and seen.last_failure == "CA said no"
    assert seen.attempts == 1

    # A's apply fails: only A backs off; B still sees the order's backoff
    node_failed = failed.with_failure("NJet refused", spec_hash="h1", at=T0 + timedelta(hours=1),
                                      retry_after=None, node_only=True)
    a.save(node_failed)
    assert a.load_all()["shop.test"] == node_failed
    seen = b.load_all()["shop.test"]
    assert seen.last_failure == "CA said no" and seen.failure_scope is None
    assert seen.backoff_until == failed.backoff_until
    fleet_row = rows(db, "SELECT body FROM cert_status WHERE key = 'shop.test'")[0][0]
    assert isinstance(fleet_row, dict) and fleet_row["last_failure"] == "CA said no"

    # B proves its NJet serves the certificate: A does not see B's apply
    b.save(seen.with_applied("b" * 64, at=T0))
    assert a.load_all()["shop.test"].applied_fingerprint == "a" * 64
    assert a.served_by()["shop.test"] == [
        pgstatus.NodeServes("node-a", "a" * 64, T0), pgstatus.NodeServes("node-b", "b" * 64, T0)]


def test_a_stale_node_never_undoes_another_nodes_fields(db: Database) -> None:
    """B loaded before A stored a new pair; B's own change (its apply succeeded) must not
    drop what A recorded (issued_at, issuer_ca, profile): fields merge, last writer per field."""
    a, b = PgStatus(db, "node-a"), PgStatus(db, "node-b")
    a.save(CertStatus(domain="shop.test", spec_hash="h1"))
    stale = b.load_all()["shop.test"]
    issued = a.load_all()["shop.test"].with_issued(at=T0, profile="", ordered="").with_issuer_ca(
        "https://ca.test/dir")
    a.save(issued)
    b.save(stale.with_success(spec_hash="h1", at=T0 + timedelta(minutes=1)))  # B's own change
    seen = a.load_all()["shop.test"]
    assert seen.issued_at == T0 and seen.issuer_ca == "https://ca.test/dir"
    assert seen.last_success_at == T0 + timedelta(minutes=1)
    # a field B sets back to its default leaves the row; A's fields stay
    b.load_all()
    cleared = b.load_all()["shop.test"].with_failure("x", spec_hash="h1", at=T0,
                                                     retry_after=None)
    b.save(cleared)
    b.save(cleared.with_success(spec_hash="h1", at=T0 + timedelta(minutes=2)))
    seen = a.load_all()["shop.test"]
    assert seen.attempts == 0 and seen.last_failure is None and seen.issuer_ca is not None


def test_save_of_an_unchanged_status_writes_nothing(db: Database) -> None:
    a = PgStatus(db, "node-a")
    status = full_status(scope=None)
    a.save(status)
    before = rows(db, "SELECT version FROM cert_status UNION ALL SELECT version FROM node_status")
    a.save(status)
    a.save(a.load_all()["shop.test"])
    after = rows(db, "SELECT version FROM cert_status UNION ALL SELECT version FROM node_status")
    assert before == after and len(after) == 2
    # a change of the node part writes the node row only
    a.save(status.with_applied("c" * 64, at=T0))
    fleet_v = rows(db, "SELECT version FROM cert_status")
    node_v = rows(db, "SELECT version, fingerprint FROM node_status")
    assert fleet_v == [before[0]] and node_v[0][0] != before[1][0]
    assert node_v[0][1] == "c" * 64
    # a status loaded from the fleet part alone, saved unchanged, writes no node row
    b = PgStatus(db, "node-b")
    b.save(b.load_all()["shop.test"])
    assert rows(db, "SELECT count(*) FROM node_status WHERE node = 'node-b'") == [(0,)]


def test_fleet_writes_notify(db: Database, pg_dsn: str) -> None:  # noqa: F811
    a = PgStatus(db, "node-a")
    with psycopg.connect(pg_dsn, autocommit=True) as listener:
        listener.execute("LISTEN njcm_status")
        a.save(CertStatus(domain="n.test", spec_hash="1"))
        a.save(CertStatus(domain="n.test", spec_hash="1").with_applied("a" * 64, at=T0))
        notes = [n.payload for n in listener.notifies(timeout=1.0, stop_after=3)]
    assert notes == ["n.test"]  # the second save changed the node part only


def test_incremental_load(db: Database) -> None:
    a, b = PgStatus(db, "node-a"), PgStatus(db, "node-b")
    for i in range(50):
        a.save(CertStatus(domain=f"s{i}.test", spec_hash=str(i)))
    first = b.load_all()
    assert len(first) == 50
    queries = b.queries
    second = b.load_all()
    assert second == first and b.queries == queries + 1
    # a change elsewhere: the next load (one query) sees it
    a.save(first["s7.test"].with_orphaned(T0))
    third = b.load_all()
    assert third["s7.test"].orphaned_at == T0 and b.queries == queries + 2
    assert {k: v for k, v in third.items() if k != "s7.test"} == \
        {k: v for k, v in first.items() if k != "s7.test"}
    # a deletion elsewhere: the checksum differs, the versions are listed once
    a.delete("s8.test")
    fourth = b.load_all()
    assert "s8.test" not in fourth and len(fourth) == 49 and b.queries == queries + 4
    assert b.load_all() == fourth and b.queries == queries + 5
    assert a.load_all() == fourth  # A's own writes and deletes are in A's cache


def test_a_row_committed_late_is_not_missed(db: Database, pg_dsn: str) -> None:  # noqa: F811
    """A version allocated before a higher one, committed after the higher one was loaded."""
    b = PgStatus(db, "node-b")
    db.ensure_schema()
    with psycopg.connect(pg_dsn) as slow:  # a writer that takes its time to commit
        slow.execute("INSERT INTO cert_status (key, body, written_by) VALUES "
                     "('late.test', '{\"domain\": \"late.test\", \"attempts\": 2}', 'x')")
        PgStatus(db, "node-a").save(CertStatus(domain="early.test"))
        assert set(b.load_all()) == {"early.test"}
        queries = b.queries
        slow.commit()
    loaded = b.load_all()
    assert set(loaded) == {"early.test", "late.test"} and loaded["late.test"].attempts == 2
    assert b.queries == queries + 3  # the load, the versions, the one body that differs
    assert b.load_all() == loaded and b.queries == queries + 4


def test_unreadable_bodies_are_logged_and_skipped(db: Database) -> None:
    with db.tx() as conn:
        conn.execute("INSERT INTO cert_status (key, body, written_by) VALUES "
                     "('bad.test', '{\"domain\": \"bad.test\", \"attempts\": \"many\"}', 'x'), "
                     "('list.test', '[1, 2]', 'x'), "
                     "('ok.test', '{\"domain\": \"ok.test\"}', 'x'), "
                     "('other.test', '{\"domain\": \"ok.test\"}', 'x')")
    with capture_logs() as logs:
        loaded = PgStatus(db, "node-a").load_all()
    assert set(loaded) == {"ok.test"}
    for key in ("bad.test", "list.test", "other.test"):
        assert key in logs.text


def test_delete_semantics(db: Database) -> None:
    a, b = PgStatus(db, "node-a"), PgStatus(db, "node-b")
    for key in ("kept.test", "gone.test"):
        a.save(CertStatus(domain=key, spec_hash="1").with_applied("a" * 64, at=T0))
        b.save(b.load_all()[key].with_applied("b" * 64, at=T0))
    with db.tx() as conn:  # the fleet still stores a certificate for kept.test
        conn.execute(
            "INSERT INTO certs (key, domain, cert_pem, issuer_pem, key_sealed, key_alg, "
            "cert_url, meta, fingerprint, serial, not_after, generation, written_by) VALUES "
            "('kept.test', 'kept.test', '', '', '', 'none', '', '{}', 'f', '1', now(), 1, 'a')")
    a.delete("kept.test")
    a.delete("gone.test")
    a.delete("never.test")  # missing is not an error
    assert rows(db, "SELECT key FROM cert_status ORDER BY key") == [("kept.test",)]
    assert rows(db, "SELECT key, node FROM node_status ORDER BY key, node") == [
        ("gone.test", "node-b"), ("kept.test", "node-b")]
    after = a.load_all()
    assert set(after) == {"kept.test"} and after["kept.test"].applied_fingerprint is None
    assert b.load_all()["gone.test"].applied_fingerprint == "b" * 64  # B's own part stays


def typical_status(domain: str) -> CertStatus:
    """What most certificates' statuses hold: issued, ARI polled, served, Ready."""
    return CertStatus(
        domain=domain, spec_hash="0123456789abcdef", last_success_at=T0, issued_at=T0,
        issuer_ca="https://acme.test/dir", profile="",
        ari=AriState(fingerprint="f" * 64, cert_id="abc.def", next_poll=T0, window_start=T0,
                     window_end=T0 + timedelta(days=2), polled_at=T0),
        applied_fingerprint="a" * 64, applied_at=T0,
        conditions=(Condition(READY, "True", "Served", "NJet serves the stored certificate", T0),
                    Condition(ISSUING, "False", "UpToDate", "nothing to do", T0)))


def test_cold_load_of_10000_statuses(db: Database) -> None:
    template = typical_status("c.test")
    with db.tx() as conn, conn.cursor() as cur:
        bodies = []
        for i in range(10_000):
            fleet, node = split(replace(template, domain=f"c{i}.test"))
            bodies.append((f"c{i}.test", fleet, node))
        cur.executemany("INSERT INTO cert_status (key, body, written_by) "
                        "VALUES (%s, %s::jsonb, 'seed')",
                        [(k, orjson.dumps(f).decode()) for k, f, _ in bodies])
        cur.executemany("INSERT INTO node_status (key, node, body) "
                        "VALUES (%s, 'node-a', %s::jsonb)",
                        [(k, orjson.dumps(n).decode()) for k, _, n in bodies])
    store = PgStatus(db, "node-a")
    db.ensure_schema()
    started = time.perf_counter()
    loaded = store.load_all()
    cold = time.perf_counter() - started
    started = time.perf_counter()
    again = store.load_all()
    warm = time.perf_counter() - started
    print(f"\n10,000 statuses: cold load {cold * 1000:.0f} ms, warm load {warm * 1000:.1f} ms")
    assert len(loaded) == 10_000 and again == loaded
    assert loaded["c42.test"].applied_fingerprint == "a" * 64
    assert cold < 5.0 and warm < cold

