"""Broken pairs (issue 13 item 2) and pairs not valid yet (item 16) over the fakes: a pair that
cannot be parsed or whose key does not match is quarantined and reissued with one order, and
until then it is in /metrics (ready 0, with a reason) and /healthz; a new pair whose notBefore
is still ahead is stored but not pushed to NJet, the plan waits until then, then applies it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from controller.admin_backend import ControllerBackend
from controller.metrics import ControllerMetrics
from controller.model import KeyType
from controller.plan import Action, ActionKind
from controller.reasons import Reason
from controller.reconcile import Loop, PassResult
from tests.certbuilder import make_cert
from tests.fakes import FakeClock, spec
from tests.unit.test_reconcile_loop import World, world

A = spec("a.test", "www.a.test")
UNPARSABLE = "certificate /p/.lego/certificates/a.test.crt cannot be read: no PEM block"


def watched(w: World) -> ControllerBackend:
    """The real admin backend, told about every pass (as service.py wires it)."""
    backend = ControllerBackend(reconciler=w.rec, loop=Loop(w.rec, timedelta(hours=1)),
                                metrics=ControllerMetrics(), mqtt_state={"connected": True})
    w.rec.observer = backend
    return backend


def seen(backend: ControllerBackend, result: PassResult) -> None:
    """What the loop does with a finished pass: keep it as the last one."""
    backend.loop.last = result


def series(backend: ControllerBackend, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in text_string_to_metric_families(backend.metrics_text()):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def ready_of(backend: ControllerBackend, domain: str) -> dict[str, Any]:
    ready = series(backend, "njcm_certificate_ready_status")
    reasons = series(backend, "njcm_certificate_not_ready")
    return {
        "ready": ready.get((("condition", "True"), ("name", domain))),
        "reasons": sorted(dict(k)["reason"] for k, v in reasons.items()
                          if dict(k)["name"] == domain and v == 1),
    }


def mismatched_pair() -> Any:
    made = make_cert(["a.test", "www.a.test"], key_type=KeyType.EC256)
    return replace(made.issued(), key_pem=make_cert(["a.test"], key_type=KeyType.EC256).key_pem)


# -- quarantined and reissued, one order -------------------------------------------------------


async def test_an_unparsable_pair_is_monitored_then_quarantined_and_reissued_once() -> None:
    w = world(A)
    backend = watched(w)
    w.store.put_unparsable("a.test", UNPARSABLE)

    before = await w.rec.compute()
    assert [(a.kind, a.reason) for a in before.plan.actions] == [(ActionKind.ISSUE,
                                                                  Reason.STORED_UNUSABLE)]
    backend.on_pass(plan=before.plan, outcomes=[], seconds=0.0, observed=before.observed,
                    statuses=w.rec.statuses)
    seen(backend, before)
    assert ready_of(backend, "a.test") == {"ready": 0, "reasons": ["StoredUnusable"]}
    health = backend.health()
    assert (health["ok"], health["status"], health["problem_count"]) == (False, "degraded", 1)
    assert health["problems"] == [{"domain": "a.test", "reason": UNPARSABLE}]

    final = await w.rec.converge(probe=True)
    seen(backend, final)
    assert w.issuer.orders == [("a.test", KeyType.EC256)]
    assert w.store.quarantined_unparsable == {"a.test": UNPARSABLE}
    assert final.plan.in_sync and w.njet.blocks[0].served["ecc"] == w.fp("a.test")
    assert ready_of(backend, "a.test") == {"ready": 1, "reasons": []}
    health = backend.health()
    assert (health["ok"], health["status"], health["problems"]) == (True, "ok", [])


async def test_a_key_that_does_not_match_is_quarantined_and_reissued_once() -> None:
    w = world(A)
    backend = watched(w)
    broken = mismatched_pair()
    w.store.put_unchecked("a.test", broken)

    first = await w.rec.pass_once()
    seen(backend, first)
    (out,) = first.outcomes
    assert out.ok and not out.skipped, out.error  # not "store changed since the plan was made"
    assert w.store.quarantined == {"a.test": broken}
    final = await w.rec.converge()
    seen(backend, final)
    assert w.issuer.orders == [("a.test", KeyType.EC256)]
    got = w.store.get("a.test")
    assert got is not None and got.key_matches and final.plan.in_sync
    assert backend.health()["ok"] is True


async def test_a_failed_order_after_the_quarantine_leaves_a_missing_name_that_is_monitored(
) -> None:
    """The broken files are out of the way before the order: the next attempt is a plain issue
    (under the backoff), and the name keeps its not-ready series meanwhile."""
    from controller.errors import TemporaryError

    w = world(A)
    backend = watched(w)
    w.store.put_unparsable("a.test", UNPARSABLE)
    w.issuer.fail.append(TemporaryError("CA down"))
    first = await w.rec.pass_once()
    seen(backend, first)
    assert not first.outcomes[0].ok and "a.test" in w.store.quarantined_unparsable
    after = await w.rec.compute()
    assert [w_.reason for w_ in after.plan.waiting] == [Reason.BACKOFF]
    assert ready_of(backend, "a.test") == {"ready": 0, "reasons": ["StoredUnusable"]}
    backend.on_pass(plan=after.plan, outcomes=[], seconds=0.0, observed=after.observed,
                    statuses=w.rec.statuses)
    assert ready_of(backend, "a.test") == {"ready": 0, "reasons": ["Backoff"]}
    assert len(w.issuer.orders) == 1


# -- the executor's precondition for an unusable pair ------------------------------------------


def unusable_issue() -> Action:
    return Action(ActionKind.ISSUE, "a.test", Reason.STORED_UNUSABLE, UNPARSABLE, spec=A,
                  key_type=KeyType.EC256, expected_unusable=True, spec_hash="h")


async def test_an_unusable_pair_repaired_since_the_plan_is_left_alone() -> None:
    w = world(A)
    good = make_cert(["a.test", "www.a.test"], key_type=KeyType.EC256).issued()
    w.store.put("a.test", good)  # someone fixed it after the plan was made
    (out,) = await w.rec.executor.execute([unusable_issue()])
    assert out.skipped and out.error == "store changed since the plan was made"
    assert w.issuer.orders == [] and w.store.quarantined == {}
    assert w.store.cert_pem("a.test") == good.cert_pem


async def test_an_unusable_pair_gone_since_the_plan_is_issued_without_a_quarantine() -> None:
    w = world(A)
    (out,) = await w.rec.executor.execute([unusable_issue()])
    assert out.ok and w.issuer.orders == [("a.test", KeyType.EC256)]
    assert w.store.quarantined == {} and w.store.quarantined_unparsable == {}


async def test_a_usable_pair_that_broke_since_the_plan_is_skipped_not_failed() -> None:
    """The plan saw nothing (or a good pair); the store now raises for the name: the next
    plan sees the unusable pair and handles it, no failure is counted."""
    w = world(A)
    w.store.put_unparsable("a.test", UNPARSABLE)
    act = replace(unusable_issue(), reason=Reason.MISSING, expected_unusable=False)
    (out,) = await w.rec.executor.execute([act])
    assert out.skipped and w.issuer.orders == []


# -- not valid yet -----------------------------------------------------------------------------


async def test_a_new_pair_not_valid_yet_is_stored_not_pushed_and_applied_at_its_not_before(
) -> None:
    w = world(A)
    w.issuer.clock = FakeClock(w.clock() + timedelta(hours=2))  # a CA clock two hours ahead
    first = await w.rec.pass_once(probe=True)
    (out,) = first.outcomes
    stored = w.store.get("a.test")
    assert out.ok and stored is not None and stored.info.not_before > w.clock()
    assert w.njet.puts == []  # not pushed: clients would reject it

    second = await w.rec.pass_once()
    assert second.plan.actions == ()
    (wait,) = second.plan.waiting
    assert (wait.reason, wait.until) == (Reason.NOT_YET_VALID, stored.info.not_before)
    assert w.rec.next_deadline(second, timedelta(hours=24)) == stored.info.not_before

    w.clock.now = stored.info.not_before
    third = await w.rec.converge()
    assert [(a.kind, a.reason) for a in w.observer.passes[-2].plan.actions] == [
        (ActionKind.APPLY, Reason.NOT_SERVED)]
    assert third.plan.in_sync and w.njet.blocks[0].served["ecc"] == stored.info.fingerprint
    assert len(w.issuer.orders) == 1


async def test_a_broken_pair_of_a_name_not_desired_is_monitored_and_left_alone() -> None:
    """Not ours to reissue (nothing wants the name): no order, no quarantine, but it shows."""
    w = world(A)
    backend = watched(w)
    w.store.put_unparsable("old.test", "certificate old.test.crt cannot be read: truncated")
    final = await w.rec.converge()
    seen(backend, final)
    assert w.issuer.orders == [("a.test", KeyType.EC256)] and w.store.quarantined_unparsable == {}
    assert ready_of(backend, "old.test") == {"ready": 0, "reasons": ["StoredUnusable"]}
    assert ready_of(backend, "a.test") == {"ready": 1, "reasons": []}
    health = backend.health()
    assert (health["ok"], health["problem_count"]) == (False, 1)
    assert [p["domain"] for p in health["problems"]] == ["old.test"]
