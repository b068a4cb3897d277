"""Issue 10 items 1, 4, 5 across CAs: a renewal's `replaces` goes only to the CA that issued
the old certificate (execute.py over ca_fallback.py), every CA's orders land in that CA's own
ledger, and the plan's budget hold (plan.py, policies/budget.py) checks the budget of the CA
the order starts at (policies/fallback.py over the status's streaks)."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.adapters.store.psl import registered_domain
from controller.app import fallback_scopes
from controller.config import parse_config
from controller.execute import Executor
from controller.model import CertificateSpec, Desired, KeyType, Observed
from controller.plan import Action, ActionKind, plan
from controller.policies.ratelimits import (
    BudgetInput,
    BudgetScope,
    EventKind,
    LedgerEvent,
    LedgerSnapshot,
    Limit,
    RateLimits,
)
from controller.policy import PolicySettings
from controller.reasons import Reason
from controller.status import CaStreak, CertStatus
from tests.fakes import FakeClock, MemoryLedger, MemoryStore
from tests.unit.test_ca_fallback import FakeCas

P, F = "https://primary.test/dir", "https://fallback.test/dir"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ACCOUNT = "ops@example.test"


def renewal(*, replaces_ca: str | None, failures: tuple[CaStreak, ...] = ()) -> Action:
    s = CertificateSpec(domain="a.test", names=("a.test",))
    return Action(ActionKind.ISSUE, "a.test", Reason.MISSING, "", spec=s, key_type=KeyType.EC256,
                  replaces="old-id", replaces_ca=replaces_ca, ca_failures=failures)


async def ordered(action: Action) -> FakeCas:
    clock = FakeClock(NOW)
    cas = FakeCas((P, F), 2, clock)
    [outcome] = await Executor(store=MemoryStore(), issuer_factory=cas.factory,
                               clock=clock).execute([action])
    assert outcome.ok, outcome.error
    return cas


async def test_replaces_goes_only_to_the_ca_that_issued_the_old_certificate() -> None:
    # issued by the primary, the primary is failing: the order goes to F without `replaces`
    cas = await ordered(renewal(replaces_ca=P, failures=(CaStreak(P, 2),)))
    assert cas.log == [1] and cas.issuer(1).replaced == [None]
    # issued by F, ordered from F: `replaces` kept
    cas = await ordered(renewal(replaces_ca=F, failures=(CaStreak(P, 2),)))
    assert cas.log == [1] and cas.issuer(1).replaced == ["old-id"]
    # issued by F, ordered from the primary again: dropped
    cas = await ordered(renewal(replaces_ca=F))
    assert cas.log == [0] and cas.issuer(0).replaced == [None]
    # no CA recorded (adopted, or issued before): [acme]'s
    cas = await ordered(renewal(replaces_ca=None))
    assert cas.log == [0] and cas.issuer(0).replaced == ["old-id"]


async def test_an_order_at_a_fallback_is_recorded_in_that_cas_ledger() -> None:
    clock = FakeClock(NOW)
    cas = FakeCas((P, F), 2, clock)
    primary, fallback = MemoryLedger(P), MemoryLedger(F)
    limits = RateLimits({Limit.NEW_ORDERS: 5})
    run = Executor(store=MemoryStore(), issuer_factory=cas.factory, ledger=primary,
                   budget_scope=BudgetScope(P, ACCOUNT, limits),
                   fallback_budgets=((BudgetScope(F, "fb@example.test", limits), fallback),),
                   registered_domain=registered_domain, clock=clock)
    [out] = await run.execute([renewal(replaces_ca=None, failures=(CaStreak(P, 2),))])
    assert out.ok and primary.events == []
    assert [(e.kind, e.ca, e.account, e.names) for e in fallback.events] == [
        (EventKind.ORDER, F, "fb@example.test", ("a.test",))]


def test_the_plan_checks_the_budget_of_the_ca_the_order_goes_to() -> None:
    """The primary's new-order budget is spent; F's is not. `a` (primary failing) goes to F and
    is admitted, `b` goes to the primary and waits; F's budget then holds a second order."""
    limits = RateLimits({Limit.NEW_ORDERS: 1})
    spent = LedgerEvent(EventKind.ORDER, NOW - timedelta(minutes=5), P, ACCOUNT,
                        ("x.test",), ("x.test",), issued=True)
    specs = {n: CertificateSpec(domain=n, names=(n,)) for n in ("a.test", "b.test", "c.test")}
    failing = (CaStreak(P, 2),)
    statuses = {"a.test": CertStatus(domain="a.test", ca_failures=failing),
                "c.test": CertStatus(domain="c.test", ca_failures=failing)}
    budgets = (BudgetInput(BudgetScope(P, ACCOUNT, limits), LedgerSnapshot(P, NOW, (spent,))),
               BudgetInput(BudgetScope(F, ACCOUNT, limits), LedgerSnapshot(F, NOW, ())))
    p = plan(Desired(specs), Observed(stored={}), statuses, NOW,
             PolicySettings(store_only=True, cas=(P, F), fallback_after=2), budget=budgets)
    assert [(a.domain, a.ca) for a in p.actions] == [("a.test", F)]
    held = {w.domain for w in p.waiting if w.reason is Reason.RATE_LIMIT_BUDGET}
    assert held == {"b.test", "c.test"}
    assert {(r.ca, r.limit, r.remaining) for r in p.rate_budget} == {
        (P, Limit.NEW_ORDERS, 0), (F, Limit.NEW_ORDERS, 0)}


def test_a_ca_without_a_limit_holds_nothing() -> None:
    spent = LedgerEvent(EventKind.ORDER, NOW - timedelta(minutes=5), P, ACCOUNT,
                        ("x.test",), ("x.test",), issued=True)
    budgets = (BudgetInput(BudgetScope(P, ACCOUNT, RateLimits({Limit.NEW_ORDERS: 1})),
                           LedgerSnapshot(P, NOW, (spent,))),)
    specs = {"a.test": CertificateSpec(domain="a.test", names=("a.test",))}
    statuses = {"a.test": CertStatus(domain="a.test", ca_failures=(CaStreak(P, 2),))}
    p = plan(Desired(specs), Observed(stored={}), statuses, NOW,
             PolicySettings(store_only=True, cas=(P, F), fallback_after=2), budget=budgets)
    assert [(a.domain, a.ca) for a in p.actions] == [("a.test", F)] and not p.waiting


def test_fallback_budgets_are_lets_encrypts_defaults_by_url_else_none(tmp_path: Path) -> None:
    le = "https://acme-v02.api.letsencrypt.org/directory"
    cfg = parse_config(tomllib.loads(f"""
[acme]
email = "ops@example.test"
acmeCaDir = "https://primary.test/dir"
[acme.rateLimits]
newOrdersPer3h = 7
[[acme.fallback]]
acmeCaDir = "{le}"
email = "le@example.test"
[[acme.fallback]]
acmeCaDir = "https://other.test/dir"
[[acme.fallback]]
acmeCaDir = "https://primary.test/other"
"""), prefix=tmp_path)
    got = {s.ca: s for s in fallback_scopes(cfg)}
    assert set(got) == {le, "https://other.test/dir"}  # the same host as [acme]'s: no ledger
    assert got[le].account == "le@example.test" and got[le].limits.any
    assert got[le].limits.get(Limit.NEW_ORDERS) != 7  # [acme.rateLimits] is the primary's
    assert not got["https://other.test/dir"].limits.any
    assert got["https://other.test/dir"].account == "ops@example.test"
