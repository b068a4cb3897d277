"""NodeRegistry (controller/adapters/pg/nodes.py) and PgEventLog (controller/adapters/pg/
events.py) over the machine's real PostgreSQL: heartbeats and liveness, the fleet's settings,
publishing and merging desired state, forgetting dead nodes, and the fleet event log (also with
its database gone)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from controller.adapters.pg.db import Database
from controller.adapters.pg.events import PgEventLog
from controller.adapters.pg.nodes import NodeRegistry, spec_from_json, spec_to_json
from controller.fold import Outcome
from controller.model import (
    ActionKind,
    CertificateSpec,
    ChallengeType,
    Desired,
    KeyType,
    NameWarning,
    Observed,
)
from controller.plan import Action, Plan
from controller.reasons import Reason
from controller.status import CertStatus
from tests.fixtures.pg import drop_database, pg_dsn  # noqa: F401
from tests.logcapture import capture_logs

TIMEOUT = timedelta(seconds=30)


@pytest.fixture
def db(pg_dsn: str) -> Iterator[Database]:  # noqa: F811
    d = Database(pg_dsn)
    yield d
    d.close()


def registry(db: Database, name: str, *, ca: str = "https://ca.test/dir") -> NodeRegistry:
    return NodeRegistry(db, name, prefix=f"/srv/{name}", version="9.9",
                        settings={"ca": ca, "keyType": "ec256", "profile": ""}, timeout=TIMEOUT)


def execute(db: Database, sql: str, *args: object) -> list[tuple[object, ...]]:
    with db.tx() as conn:
        cur = conn.execute(sql, args)
        return cur.fetchall() if cur.description else []


def kill(db: Database, name: str) -> None:
    """The node's last heartbeat is older than the timeout (no sleeping)."""
    execute(db, "UPDATE nodes SET heartbeat_at = now() - interval '1 hour' WHERE name = %s", name)


def spec(domain: str, *names: str, **kw: object) -> CertificateSpec:
    return CertificateSpec(domain=domain, names=(domain, *names), listens=("0.0.0.0:443",),
                           **kw)  # type: ignore[arg-type]


def desired(*specs: CertificateSpec, warnings: tuple[NameWarning, ...] = ()) -> Desired:
    return Desired(specs={s.key: s for s in specs}, warnings=warnings)


# -- heartbeats, liveness, settings ----------------------------------------------------------


def test_heartbeat_and_liveness(db: Database) -> None:
    a, b = registry(db, "node-a"), registry(db, "node-b")
    a.heartbeat()
    started = a.started_at
    assert started is not None and started.tzinfo is not None
    b.heartbeat()
    assert a.live_names() == ["node-a", "node-b"]
    a.heartbeat()
    assert a.started_at == started  # fixed at the first heartbeat of this process
    row = execute(db, "SELECT settings_hash, host, prefix, pid, version, settings "
                      "FROM nodes WHERE name = 'node-a'")[0]
    assert row[0] == a.settings_hash and row[2] == "/srv/node-a" and row[4] == "9.9"
    assert row[5] == {"ca": "https://ca.test/dir", "keyType": "ec256", "profile": ""}
    kill(db, "node-b")
    assert a.live_names() == ["node-a"]
    assert [(n.name, n.live) for n in a.nodes()] == [("node-a", True), ("node-b", False)]
    b.heartbeat()  # back
    assert b.live_names() == ["node-a", "node-b"]
    assert [n.name for n in b.live()] == ["node-a", "node-b"]  # ordered by started_at


def test_settings_state(db: Database) -> None:
    a, b = registry(db, "node-a"), registry(db, "node-b", ca="https://other.test/dir")
    c = registry(db, "node-c")
    assert a.settings_state().agrees  # nobody is live yet
    for r in (a, b, c):
        r.heartbeat()
    assert a.settings_hash != b.settings_hash and a.settings_hash == c.settings_hash
    sa, sb = a.settings_state(), b.settings_state()
    assert sa.leader == sb.leader == "node-a" and sa.fleet_hash == sb.fleet_hash == a.settings_hash
    assert sa.agrees and not sb.agrees
    assert sa.differing == sb.differing == ("node-b",)
    # the leader is the earliest started live node; ties by name
    execute(db, "UPDATE nodes SET started_at = (SELECT started_at FROM nodes "
                "WHERE name = 'node-a') WHERE name = 'node-b'")
    assert b.settings_state().leader == "node-a"
    kill(db, "node-a")
    sb = b.settings_state()
    assert sb.leader == "node-b" and sb.agrees and sb.differing == ("node-c",)
    kill(db, "node-c")
    only = b.settings_state()
    assert only.agrees and only.differing == () and only.leader == "node-b"


# -- desired state ---------------------------------------------------------------------------


def test_spec_json_round_trip() -> None:
    full = spec("d.test", "www.d.test", key_type=KeyType.EC384, challenge_type=ChallengeType.DNS,
                profile="shortlived", profile_required=True, reuse_key=True, slot="ecc",
                dual=True)
    again = spec_from_json(spec_to_json(full))
    assert again.key == full.key and again.names == full.names and again.listens == ()
    for f in ("key_type", "challenge_type", "profile", "profile_required", "reuse_key", "slot",
              "dual", "source"):
        assert getattr(again, f) == getattr(full, f)


def test_publish_writes_only_on_change(db: Database, pg_dsn: str) -> None:  # noqa: F811
    a = registry(db, "node-a")
    a.heartbeat()
    first = desired(spec("shop.test", "www.shop.test"), spec("blog.test"))
    with psycopg.connect(pg_dsn, autocommit=True) as listener:
        listener.execute("LISTEN njcm_desired")
        assert a.publish(first)
        assert not a.publish(first)
        assert not a.publish(desired(spec("blog.test"), spec("shop.test", "www.shop.test")))
        notes = [n.payload for n in listener.notifies(timeout=1.0, stop_after=2)]
    assert notes == ["node-a"]
    rows = execute(db, "SELECT key, domain, names, spec->>'key_type' FROM node_specs "
                       "WHERE node = 'node-a' ORDER BY key")
    assert rows == [("blog.test", "blog.test", ["blog.test"], None),
                    ("shop.test", "shop.test", ["shop.test", "www.shop.test"], None)]
    assert a.publish(desired(spec("shop.test", key_type=KeyType.EC256)))
    rows = execute(db, "SELECT key, spec->>'key_type' FROM node_specs")
    assert rows == [("shop.test", "ec256")]
    # the node row was forgotten meanwhile: the next heartbeat re-creates it and the same
    # desired state is published again
    execute(db, "DELETE FROM nodes; DELETE FROM node_specs")
    a.heartbeat()
    assert a.publish(desired(spec("shop.test", key_type=KeyType.EC256)))


def test_merged_desired(db: Database) -> None:
    a, b, c = registry(db, "node-a"), registry(db, "node-b"), registry(db, "node-c")
    warn = NameWarning("*.x.test", "wildcard without [dns]", "njet.conf:3")
    local_a = desired(spec("shop.test", "www.shop.test", "a.shop.test"), spec("only-a.test"),
                      spec("same.test", "www.same.test"), warnings=(warn,))
    local_b = desired(spec("shop.test", "b.shop.test"), spec("only-b.test"),
                      spec("same.test", "www.same.test"))
    local_c = desired(spec("shop.test", "c.shop.test"), spec("only-c.test"))
    for r, d in ((a, local_a), (b, local_b), (c, local_c)):
        r.heartbeat()
        r.publish(d)
    kill(db, "node-c")  # a dead node's specs do not count
    va, vb = a.merged(local_a), b.merged(local_b)
    union = ("shop.test", "a.shop.test", "b.shop.test", "www.shop.test")
    assert va.desired.specs["shop.test"].names == vb.desired.specs["shop.test"].names == union
    assert va.desired.specs["shop.test"].listens == ("0.0.0.0:443",)  # the rest is local
    assert va.desired.specs["only-a.test"] == local_a.specs["only-a.test"]
    assert va.desired.specs["same.test"].names == ("same.test", "www.same.test")
    assert set(va.desired.specs) == set(local_a.specs)
    assert va.desired.elsewhere == {"only-b.test": ("node-b",)}
    assert vb.desired.elsewhere == {"only-a.test": ("node-a",)}
    assert va.desired.warnings == (warn,)
    assert va.disagreements == vb.disagreements == (
        "only-a.test: wanted by node-a only (node-b does not have it)",
        "only-b.test: wanted by node-b only (node-a does not have it)",
        "shop.test: names differ: node-a has shop.test,a.shop.test,www.shop.test; "
        "node-b has shop.test,b.shop.test",
    )
    c.heartbeat()  # back: its wishes count again
    vc = c.merged(local_c)
    assert vc.desired.specs["shop.test"].names == (
        "shop.test", "a.shop.test", "b.shop.test", "c.shop.test", "www.shop.test")
    assert vc.desired.elsewhere == {"only-a.test": ("node-a",), "only-b.test": ("node-b",),
                                    "same.test": ("node-a", "node-b")}
    assert "only-c.test: wanted by node-c only (node-a, node-b do not have it)" \
        in vc.disagreements
    # alone, a node's own desired state is the merged one
    kill(db, "node-b")
    kill(db, "node-c")
    alone = a.merged(local_a)
    assert alone.desired.specs == local_a.specs and alone.desired.elsewhere == {}
    assert alone.disagreements == ()


def test_forget_dead(db: Database) -> None:
    a, b = registry(db, "node-a"), registry(db, "node-b")
    for r in (a, b):
        r.heartbeat()
        r.publish(desired(spec(f"{r.node}.test")))
    execute(db, "INSERT INTO node_status (key, node, body) VALUES ('x.test', 'node-b', '{}')")
    assert a.forget_dead() == 0
    execute(db, "UPDATE nodes SET heartbeat_at = now() - interval '8 days' WHERE name = 'node-b'")
    assert a.forget_dead(timedelta(days=30)) == 0
    assert a.forget_dead() == 1
    assert execute(db, "SELECT name FROM nodes") == [("node-a",)]
    assert execute(db, "SELECT node FROM node_specs") == [("node-a",)]
    assert execute(db, "SELECT node FROM node_status") == [("node-b",)]


# -- the fleet event log ---------------------------------------------------------------------


def a_pass() -> tuple[Plan, list[Outcome], dict[str, CertStatus]]:
    issue = Action(ActionKind.ISSUE, "shop.test", Reason.MISSING, "no certificate stored")
    apply = Action(ActionKind.APPLY, "blog.test", Reason.MISSING, "NJet serves the bootstrap")
    renew = Action(ActionKind.RENEW, "old.test", Reason.MISSING, "due")
    at = datetime(2025, 3, 1, tzinfo=UTC)
    failed = CertStatus(domain="shop.test").with_failure("CA said no", spec_hash=None, at=at,
                                                         retry_after=None)
    outcomes = [Outcome(issue, ok=False, error="CA said no"),
                Outcome(apply, ok=True, served_fingerprint="b" * 64),
                Outcome(renew, ok=False, skipped=True)]
    return Plan(actions=(issue, apply, renew)), outcomes, {"shop.test": failed}


def test_event_log_writes_one_batch_per_pass(db: Database) -> None:
    log = PgEventLog(db, "node-a")
    plan, outcomes, statuses = a_pass()
    log.on_pass(plan=Plan(), outcomes=[], seconds=0.1, observed=Observed(stored={}),
                statuses={})
    assert log.flush() and log.written == 0  # nothing to say: nothing written
    log.on_pass(plan=plan, outcomes=outcomes, seconds=0.1, observed=Observed(stored={}),
                statuses=statuses)
    assert log.flush()
    rows = execute(db, "SELECT node, kind, key, detail->>'result' FROM events ORDER BY id")
    assert rows == [("node-a", "decision", "shop.test", None),
                    ("node-a", "decision", "blog.test", None),
                    ("node-a", "decision", "old.test", None),
                    ("node-a", "outcome", "shop.test", "failed"),
                    ("node-a", "outcome", "blog.test", "ok"),
                    ("node-a", "outcome", "old.test", "skipped")]
    recent = log.recent(limit=4)
    assert [e["kind"] for e in recent] == ["decision", "outcome", "outcome", "outcome"]
    failed = recent[1]
    assert failed["domain"] == "shop.test" and failed["error"] == "CA said no"
    assert failed["attempt"] == 1 and failed["next_attempt"].startswith("2025-03-01T00:01")
    assert recent[2]["served"] == "b" * 64 and recent[0]["action"] == "renew"
    assert [e["kind"] for e in log.recent(domain="blog.test")] == ["decision", "outcome"]
    log.close()


def test_event_log_survives_a_dropped_database(db: Database, pg_dsn: str) -> None:  # noqa: F811
    log = PgEventLog(db, "node-a")
    plan, outcomes, statuses = a_pass()
    log.on_pass(plan=plan, outcomes=outcomes, seconds=0.1, observed=Observed(stored={}),
                statuses=statuses)
    assert log.flush() and log.written == 6
    drop_database(str(psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]))
    with capture_logs() as logs:
        for _ in range(3):
            log.on_pass(plan=plan, outcomes=outcomes, seconds=0.1,
                        observed=Observed(stored={}), statuses=statuses)
        assert log.flush()
    warnings = [ln for ln in logs.lines() if "fleet event log not written" in ln]
    assert len(warnings) == 1 and 'error="database ' in warnings[0]  # once, with the error
    assert log.lost == 18 and log.written == 6
    log.close()
