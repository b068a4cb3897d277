"""Fleet mode's pure parts and the executor under the order gate (tests/fakes.py MemoryGate):
names wanted by another node are not orphaned, a failure of a node's own NJet is scoped to
that node, and an action another node does is a skipped outcome that orders nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.certinfo import fingerprint_pem
from controller.execute import Executor
from controller.fold import Outcome, fold
from controller.model import ActionKind, Desired, KeyType, NjetTarget, Observed
from controller.plan import Action, plan
from controller.policy import PolicySettings
from controller.ports import OrderGate
from controller.reasons import Reason
from controller.status import FAILURE_NODE, CertStatus
from tests.certbuilder import make_cert
from tests.fakes import FakeClock, FakeIssuer, MemoryGate, MemoryStore, spec
from tests.unit.test_plan import stored

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SETTINGS = PolicySettings(store_only=True, delete_grace=timedelta(0))


def test_a_stored_name_another_live_node_wants_is_not_orphaned() -> None:
    cert = stored("b.test")
    statuses = {"b.test": CertStatus(domain="b.test")}
    alone = plan(Desired(specs={}), Observed(stored={"b.test": cert}), statuses, NOW, SETTINGS)
    assert [x.reason for x in alone.scheduled] == [Reason.ORPHAN_GRACE]
    shared = plan(Desired(specs={}, elsewhere={"b.test": ("node-b",)}),
                  Observed(stored={"b.test": cert}), statuses, NOW, SETTINGS)
    assert shared.actions == () and shared.scheduled == ()


def test_wanted_elsewhere_again_ends_the_orphan_grace() -> None:
    cur = CertStatus(domain="b.test").with_orphaned(NOW - timedelta(hours=1))
    after, removed = fold({"b.test": cur}, desired=Desired(specs={}, elsewhere={
        "b.test": ("node-b",)}), plan=plan(Desired(specs={}), Observed(stored={}), {}, NOW,
                                           SETTINGS), outcomes=[], now=NOW)
    assert after["b.test"].orphaned_at is None and not removed


def _outcome(kind: ActionKind, *, stored_fp: str | None = None) -> Outcome:
    s = spec("a.test")
    action = Action(kind, "a.test", Reason.NOT_SERVED, "test", spec=s, key_type=KeyType.EC256,
                    spec_hash="h")
    return Outcome(action, ok=False, error="boom", stored_fingerprint=stored_fp)


def test_a_failure_of_this_nodes_njet_is_scoped_to_the_node_an_order_failure_is_not() -> None:
    desired = Desired(specs={"a.test": spec("a.test")})
    empty = plan(desired, Observed(stored={}), {}, NOW, SETTINGS)
    for outcome, scope in ((_outcome(ActionKind.APPLY), FAILURE_NODE),
                           (_outcome(ActionKind.RENEW, stored_fp="f" * 64), FAILURE_NODE),
                           (_outcome(ActionKind.ISSUE), None)):
        after, _ = fold({}, desired=desired, plan=empty, outcomes=[outcome], now=NOW)
        assert after["a.test"].failure_scope == scope, outcome.action.kind
        assert after["a.test"].backoff_until is not None
        ok = after["a.test"].with_success(spec_hash="h", at=NOW)
        assert ok.failure_scope is None and ok.backoff_until is None


def _executor(gate: OrderGate) -> tuple[Executor, FakeIssuer, MemoryStore]:
    clock = FakeClock()
    issuer, store = FakeIssuer(clock), MemoryStore()
    return Executor(store=store, issuer_factory=issuer.factory, gate=gate, clock=clock), \
        issuer, store


def _issue() -> Action:
    s = spec("a.test")
    return Action(ActionKind.ISSUE, "a.test", Reason.MISSING, "test", spec=s,
                  key_type=KeyType.EC256, spec_hash="h",
                  targets=(NjetTarget(s.listens, s.names),))


async def test_under_the_gate_one_node_orders_the_other_skips_without_ordering() -> None:
    shared: dict[str, str] = {}
    gate_b = MemoryGate("node-b", shared)
    shared["a.test"] = "node-a"  # node-a holds the lease right now
    executor, issuer, store = _executor(gate_b)
    [outcome] = await executor.execute([_issue()])
    assert outcome.skipped and not outcome.ok and "node-a" in (outcome.error or "")
    assert issuer.orders == [] and store.get("a.test") is None
    # a skipped outcome changes no status: no backoff for a name another node handles
    desired = Desired(specs={"a.test": spec("a.test")})
    after, _ = fold({}, desired=desired, plan=plan(desired, Observed(stored={}), {}, NOW,
                                                   SETTINGS), outcomes=[outcome], now=NOW)
    assert after["a.test"].backoff_until is None and after["a.test"].attempts == 0
    del shared["a.test"]
    [done] = await executor.execute([_issue()])
    assert done.ok and gate_b.entered == 1 and store.get("a.test") is not None
    assert shared == {}  # released


async def test_a_newer_certificate_in_the_fleet_store_is_not_ordered_again() -> None:
    made = make_cert(["a.test"], key_type=KeyType.EC256)
    gate = MemoryGate("node-b", stored={"a.test": fingerprint_pem(made.cert_pem)})
    executor, issuer, _ = _executor(gate)
    [outcome] = await executor.execute([_issue()])
    assert outcome.skipped and "another node stored" in (outcome.error or "")
    assert issuer.orders == []
    gate.stored.clear()
    gate.refuse = "this node's [acme] settings differ from the fleet's"
    [refused] = await executor.execute([_issue()])
    assert refused.skipped and "settings differ" in (refused.error or "") and issuer.orders == []
