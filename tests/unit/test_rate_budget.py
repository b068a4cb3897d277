"""The rate-limit budget: windows that slide, names grouped by registered domain (the real public
suffix list), which orders a short budget goes to, the hold's wait lines, the limits in force,
what the executor records, and the metric."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.store.psl import registered_domain
from controller.app import budget_scope
from controller.config import parse_config
from controller.errors import (
    ConfigError,
    PermanentError,
    RateLimited,
    TemporaryError,
    ValidationFailed,
    mark_order_placed,
    order_placed,
)
from controller.execute import Executor
from controller.metrics import ControllerMetrics
from controller.model import CertificateSpec, CertInfo, Desired, KeyType, Observed, StoredCert
from controller.plan import Action, ActionKind, Plan, plan
from controller.policies.ratelimits import (
    LETS_ENCRYPT,
    BudgetBook,
    BudgetInput,
    BudgetScope,
    EventKind,
    LedgerEvent,
    LedgerSnapshot,
    Limit,
    RateLimits,
    limits_for,
)
from controller.policy import PolicySettings
from controller.reasons import Reason
from controller.status import RENEWAL_SOURCE_ARI, CertStatus
from tests.fakes import FakeClock, FakeIssuer, MemoryLedger, MemoryStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CA = "https://ca.fake/dir"
ACCOUNT = "ops@example.test"
SETTINGS = PolicySettings(store_only=True)
ROOT = Path(__file__).resolve().parents[2]


def scope(**limits: int) -> BudgetScope:
    return BudgetScope(CA, ACCOUNT, RateLimits({Limit(k): v for k, v in limits.items()}))


def order(*names: str, at: datetime, issued: bool = True, account: str = ACCOUNT,
          ca: str = CA) -> LedgerEvent:
    return LedgerEvent(EventKind.ORDER, at, ca, account, tuple(sorted(names)),
                       tuple(sorted({registered_domain(n) for n in names})), issued=issued)


def budget(sc: BudgetScope, *events: LedgerEvent, names: tuple[str, ...] = ()) -> BudgetInput:
    return BudgetInput(sc, LedgerSnapshot(CA, NOW, events),
                       {n: registered_domain(n) for n in names})


def spec(*names: str) -> CertificateSpec:
    return CertificateSpec(domain=names[0], names=names)


def stored(name: str, *, age: timedelta, lifetime: timedelta = timedelta(days=90)) -> StoredCert:
    info = CertInfo(common_name=name, names=(name,), not_before=NOW - age,
                    not_after=NOW - age + lifetime, key_type=KeyType.RSA2048, serial="01",
                    fingerprint=name.ljust(64, "0")[:64], issuer="CN=test CA")
    return StoredCert(domain=name, info=info, key_matches=True)


def planned(specs: list[CertificateSpec], b: BudgetInput, *, stored_certs: tuple[StoredCert, ...]
            = (), statuses: dict[str, CertStatus] | None = None, now: datetime = NOW) -> Plan:
    desired = Desired({s.domain: s for s in specs})
    observed = Observed(stored={c.domain: c for c in stored_certs})
    domains = {n: registered_domain(n) for s in specs for n in s.names}
    return plan(desired, observed, statuses or {}, now, SETTINGS,
                budget=BudgetInput(b.scope, b.snapshot, domains))


def waits(p: Plan) -> dict[str, str]:
    return {w.domain: w.message for w in p.waiting if w.reason is Reason.RATE_LIMIT_BUDGET}


# -- windows ---------------------------------------------------------------------------------


def test_the_new_orders_window_slides() -> None:
    sc = scope(newOrdersPer3h=2)
    first, second = NOW - timedelta(hours=2), NOW - timedelta(hours=1)
    snap = budget(sc, order("a.test", at=first), order("b.test", at=second))
    (use,) = BudgetBook(snap, NOW).for_order(["c.test"]).uses
    assert (use.limit, use.used, use.allowed, use.full) == (Limit.NEW_ORDERS, 2, 2, True)
    assert use.frees_at == first + timedelta(hours=3)  # the oldest leaves the window first
    # an hour on, the first order left the window: room for one
    later = BudgetBook(snap, first + timedelta(hours=3)).for_order(["c.test"]).uses[0]
    assert (later.used, later.full, later.frees_at) == (1, False, None)
    # just before, still full
    assert BudgetBook(snap, first + timedelta(hours=3, seconds=-1)).for_order(["c"]).uses[0].full


def test_new_orders_count_this_account_only_and_failed_orders_too() -> None:
    sc = scope(newOrdersPer3h=2)
    snap = budget(sc, order("a.test", at=NOW, issued=False),
                  order("b.test", at=NOW, account="other@example.test"),
                  order("c.test", at=NOW, ca="https://other.ca/dir"))
    assert BudgetBook(snap, NOW).for_order(["d.test"]).uses[0].used == 1


def test_certificates_per_domain_count_issued_certificates_for_seven_days() -> None:
    sc = scope(certificatesPerDomainPerWeek=2)
    events = (order("a.example.com", at=NOW - timedelta(days=6)),
              order("b.example.com", at=NOW - timedelta(days=1)),
              order("c.example.com", at=NOW, issued=False))  # no certificate: not counted
    snap = budget(sc, *events, names=("x.example.com",))
    (use,) = BudgetBook(snap, NOW).for_order(["x.example.com"]).uses
    assert (use.key, use.used, use.full) == ("example.com", 2, True)
    assert use.frees_at == NOW + timedelta(days=1)
    assert not BudgetBook(snap, NOW + timedelta(days=1)).for_order(["x.example.com"]).uses[0].full


def test_duplicates_count_the_exact_name_set_whatever_its_order() -> None:
    sc = scope(duplicatesPerWeek=1)
    book = BudgetBook(budget(sc, order("a.test", "www.a.test", at=NOW)), NOW)
    assert book.for_order(["www.a.test", "A.test"]).uses[0].full
    assert not book.for_order(["a.test"]).uses[0].full  # another name set


def test_failed_validations_hold_the_host_for_an_hour() -> None:
    sc = scope(failedValidationsPerHostPerHour=2)
    fails = [LedgerEvent(EventKind.FAILED_VALIDATION, NOW - timedelta(minutes=m), CA, ACCOUNT,
                         ("a.test",), ("a.test",)) for m in (50, 10)]
    book = BudgetBook(budget(sc, *fails), NOW)
    uses = {u.key: u for u in book.for_order(["a.test", "b.test"]).uses}
    assert uses["a.test"].full and uses["a.test"].frees_at == NOW + timedelta(minutes=10)
    assert not uses["b.test"].full
    book.spend(["a.test"])  # an order is no failed validation
    assert book.for_order(["a.test"]).uses[0].used == 2


# -- registered domains ----------------------------------------------------------------------


def test_the_packaged_public_suffix_list_groups_names_by_registered_domain() -> None:
    assert registered_domain("a.example.co.uk") == registered_domain("B.Example.co.uk.") \
        == "example.co.uk"
    assert registered_domain("www.shop.example.com") == "example.com"
    assert registered_domain("*.shop.example.com") == "example.com"
    assert registered_domain("x.github.io") == "x.github.io"  # the private section counts
    assert registered_domain("co.uk") == "co.uk"  # a public suffix is its own
    assert registered_domain("localhost") == "localhost"
    assert registered_domain("127.0.0.1") == "127.0.0.1"


def test_names_of_one_registered_domain_share_its_budget() -> None:
    sc = scope(certificatesPerDomainPerWeek=1)
    p = planned([spec("b.example.co.uk")], budget(sc, order("a.example.co.uk", at=NOW)))
    assert p.actions == ()
    assert waits(p) == {"b.example.co.uk": "certificatesPerDomainPerWeek: 1 of 1 used for "
                        "example.co.uk; issue (Missing) held back"}
    (w,) = p.waiting
    assert w.until == NOW + timedelta(days=7)
    # another registered domain is not held
    other = planned([spec("b.example.org")], budget(sc, order("a.example.co.uk", at=NOW)))
    assert [a.domain for a in other.actions] == ["b.example.org"]


def test_the_public_suffix_list_is_read_offline_and_never_updated() -> None:
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k):\n"
        "    raise OSError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from controller.adapters.store import psl\n"
        "assert psl.registered_domain('a.example.co.uk') == 'example.co.uk'\n"
        "assert 'publicsuffixlist.update' not in sys.modules\n"
        "assert psl.list_path().is_file() and psl.list_path().stat().st_size > 100_000\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# -- which orders a short budget goes to -------------------------------------------------------


def test_renewals_take_a_short_budget_before_first_issuances() -> None:
    sc = scope(newOrdersPer3h=3)
    specs = [spec(n) for n in ("a.test", "b.test", "c.test", "r.test", "x.test", "z.test")]
    certs = (
        stored("r.test", age=timedelta(days=70)),  # renewal due by the lifetime rule
        stored("x.test", age=timedelta(days=85)),  # 5 of 90 days left: the emergency rule
        stored("z.test", age=timedelta(days=91)),  # expired
    )
    p = planned(specs, budget(sc, order("o.test", at=NOW - timedelta(hours=1))),
                stored_certs=certs)
    # two left: the expired and the emergency renewal take them; the lifetime-rule renewal and
    # the first issuances wait
    assert sorted(a.domain for a in p.actions) == ["x.test", "z.test"]
    assert sorted(waits(p)) == ["a.test", "b.test", "c.test", "r.test"]


def test_urgent_renewals_go_first_then_renewals_then_first_issuances_by_name() -> None:
    sc = scope(newOrdersPer3h=4)
    specs = [spec(n) for n in ("a.test", "b.test", "r.test", "s.test", "x.test", "z.test")]
    certs = (
        stored("r.test", age=timedelta(days=70)),  # lifetime rule
        stored("s.test", age=timedelta(days=65)),  # lifetime rule, expires later than r.test
        stored("x.test", age=timedelta(days=85)),  # emergency
        stored("z.test", age=timedelta(days=91)),  # expired
    )
    p = planned(specs, budget(sc), stored_certs=certs)
    assert sorted(a.domain for a in p.actions) == ["r.test", "s.test", "x.test", "z.test"]
    assert sorted(waits(p)) == ["a.test", "b.test"]
    tight = planned(specs, budget(scope(newOrdersPer3h=3)), stored_certs=certs)
    assert sorted(a.domain for a in tight.actions) == ["r.test", "x.test", "z.test"]
    # with room for five, the first issuances go in name order
    roomy = planned(specs, budget(scope(newOrdersPer3h=5)), stored_certs=certs)
    assert sorted(waits(roomy)) == ["b.test"]


def test_an_ari_chosen_renewal_time_goes_before_the_lifetime_rule() -> None:
    sc = scope(newOrdersPer3h=1)
    specs = [spec("r.test"), spec("s.test")]
    certs = (stored("r.test", age=timedelta(days=70)), stored("s.test", age=timedelta(days=20)))
    chosen = CertStatus(domain="s.test", renewal_at=NOW - timedelta(hours=1),
                        renewal_source=RENEWAL_SOURCE_ARI,
                        renewal_for=certs[1].info.fingerprint)
    p = planned(specs, budget(sc), stored_certs=certs, statuses={"s.test": chosen})
    assert [(a.domain, a.reason) for a in p.actions] == [("s.test", Reason.RENEWAL_DUE)]
    assert list(waits(p)) == ["r.test"]


def test_the_wait_says_which_limit_how_much_for_whom_and_until_when() -> None:
    sc = scope(newOrdersPer3h=2)
    p = planned([spec(f"n{i}.test") for i in range(1, 5)], budget(sc))
    assert [a.domain for a in p.actions] == ["n1.test", "n2.test"]
    assert waits(p) == {
        "n3.test": f"newOrdersPer3h: 2 of 2 used by account {ACCOUNT}; issue (Missing) held back",
        "n4.test": f"newOrdersPer3h: 2 of 2 used by account {ACCOUNT}; issue (Missing) held back",
    }
    assert {w.until for w in p.waiting} == {NOW + timedelta(hours=3)}
    assert [(r.limit, r.remaining, r.allowed) for r in p.rate_budget] == [
        (Limit.NEW_ORDERS, 0, 2)]


def test_the_latest_freeing_limit_is_the_one_named() -> None:
    sc = scope(newOrdersPer3h=1, certificatesPerDomainPerWeek=1)
    events = (order("a.example.com", at=NOW - timedelta(hours=2)),)
    (w,) = planned([spec("b.example.com")], budget(sc, *events)).waiting
    assert w.message.startswith("certificatesPerDomainPerWeek: 1 of 1 used for example.com")
    assert w.until == events[0].at + timedelta(days=7)


def test_a_rate_limited_answer_holds_the_registered_domain_until_its_retry_after() -> None:
    sc = scope(newOrdersPer3h=300)
    limited = LedgerEvent(EventKind.RATE_LIMITED, NOW - timedelta(minutes=5), CA, ACCOUNT,
                          ("a.example.com",), ("example.com",), until=NOW + timedelta(hours=1))
    p = planned([spec("b.example.com"), spec("c.example.org")], budget(sc, limited))
    assert [a.domain for a in p.actions] == ["c.example.org"]
    (w,) = p.waiting
    assert (w.domain, w.reason, w.until) == ("b.example.com", Reason.RATE_LIMIT_BUDGET,
                                             NOW + timedelta(hours=1))
    assert "rateLimited for example.com" in w.message
    after = planned([spec("b.example.com")], budget(sc, limited), now=NOW + timedelta(hours=1))
    assert [a.domain for a in after.actions] == ["b.example.com"]


def test_without_a_budget_nothing_is_held_and_no_figure_is_reported() -> None:
    specs = [spec(f"n{i}.test") for i in range(10)]
    p = plan(Desired({s.domain: s for s in specs}), Observed(stored={}), {}, NOW, SETTINGS)
    assert len(p.actions) == 10 and p.rate_budget == ()
    roomy = planned(specs, budget(scope(newOrdersPer3h=10)))
    assert len(roomy.actions) == 10 and roomy.waiting == ()


def test_the_least_left_across_registered_domains_is_reported() -> None:
    sc = scope(certificatesPerDomainPerWeek=5)
    events = (order("a.example.com", at=NOW), order("b.example.com", at=NOW),
              order("a.example.org", at=NOW))
    p = planned([spec("c.example.com")], budget(sc, *events))
    assert [(r.limit, r.remaining) for r in p.rate_budget] == [(Limit.PER_DOMAIN, 2)]


# -- the limits in force --------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://acme-v02.api.letsencrypt.org/directory",
                                 "https://acme-staging-v02.api.letsencrypt.org/directory"])
def test_lets_encrypts_published_limits_are_the_defaults_for_its_directories(url: str) -> None:
    assert limits_for(url, {}) == LETS_ENCRYPT
    assert LETS_ENCRYPT.values == {Limit.NEW_ORDERS: 300, Limit.PER_DOMAIN: 50,
                                   Limit.DUPLICATES: 5, Limit.FAILED_VALIDATIONS: 5}
    mine = limits_for(url, {"newOrdersPer3h": 20})
    assert mine.get(Limit.NEW_ORDERS) == 20 and mine.get(Limit.DUPLICATES) == 5


def test_another_ca_has_no_limit_unless_configured(tmp_path: Path) -> None:
    cfg = parse_config({"acme": {"acmeCaDir": "https://127.0.0.1:14000/dir"}}, prefix=tmp_path)
    assert not budget_scope(cfg).limits.any
    cfg = parse_config({"acme": {"acmeCaDir": "https://127.0.0.1:14000/dir", "email": "a@b.c",
                                 "rateLimits": {"duplicatesPerWeek": 2}}}, prefix=tmp_path)
    assert budget_scope(cfg) == BudgetScope("https://127.0.0.1:14000/dir", "a@b.c",
                                            RateLimits({Limit.DUPLICATES: 2}))
    assert budget_scope(parse_config({}, prefix=tmp_path)).limits == LETS_ENCRYPT


@pytest.mark.parametrize("key", [lim.value for lim in Limit])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "s3cr3t", [1]])
def test_a_budget_must_be_an_integer_of_at_least_one(tmp_path: Path, key: str,
                                                     value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"acme": {"rateLimits": {key: value}}}, prefix=tmp_path)
    assert f"acme.rateLimits.{key}: " in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


# -- what the executor records -----------------------------------------------------------------


def issue(name: str) -> Action:
    s = CertificateSpec(domain=name, names=(name, f"www.{name}"))
    return Action(ActionKind.ISSUE, name, Reason.MISSING, "", spec=s, key_type=KeyType.EC256)


def executor(ledger: MemoryLedger, issuer: FakeIssuer, clock: FakeClock) -> Executor:
    return Executor(store=MemoryStore(), issuer_factory=issuer.factory, ledger=ledger,
                    budget_scope=scope(newOrdersPer3h=5), registered_domain=registered_domain,
                    clock=clock)


def placed(exc: Exception) -> Exception:
    mark_order_placed(exc)
    return exc


async def test_every_issue_attempt_is_recorded_as_the_ca_counts_it() -> None:
    clock, ledger = FakeClock(NOW), MemoryLedger(CA)
    issuer = FakeIssuer(clock)
    issuer.fail = [
        placed(ValidationFailed("http-01 validation of b.example.co.uk failed",
                                hosts=("www.b.example.co.uk",))),
        RateLimited("too many new orders", retry_after=600),  # refused: no order placed
        TemporaryError("connection refused"),  # never reached the CA
    ]
    run = executor(ledger, issuer, clock)
    outcomes = await run.execute([issue("b.example.co.uk")])
    outcomes += await run.execute([issue("c.example.co.uk")])
    outcomes += await run.execute([issue("d.example.co.uk")])
    outcomes += await run.execute([issue("a.example.co.uk")])
    assert [o.ok for o in outcomes] == [False, False, False, True]
    got = [(e.kind, e.names, e.domains, e.issued, e.until) for e in ledger.events]
    assert got == [
        (EventKind.ORDER, ("b.example.co.uk", "www.b.example.co.uk"), ("example.co.uk",), False,
         None),
        (EventKind.FAILED_VALIDATION, ("www.b.example.co.uk",), ("example.co.uk",), False, None),
        (EventKind.RATE_LIMITED, ("c.example.co.uk", "www.c.example.co.uk"), ("example.co.uk",),
         False, NOW + timedelta(minutes=10)),
        (EventKind.ORDER, ("a.example.co.uk", "www.a.example.co.uk"), ("example.co.uk",), True,
         None),
    ]
    assert {(e.ca, e.account, e.at) for e in ledger.events} == {(CA, ACCOUNT, NOW)}


async def test_a_ledger_that_cannot_be_written_never_fails_the_order() -> None:
    clock, ledger = FakeClock(NOW), MemoryLedger(CA)
    ledger.fail = 1
    outcomes = await executor(ledger, FakeIssuer(clock), clock).execute([issue("a.test")])
    assert outcomes[0].ok and ledger.events == []


def test_an_order_placed_mark_survives_the_error_it_is_raised_as() -> None:
    cause = OSError("read timed out")
    mark_order_placed(cause)
    try:
        raise TemporaryError("ordering a.test: timed out") from cause
    except TemporaryError as exc:
        assert order_placed(exc)
    assert not order_placed(PermanentError("rejectedIdentifier"))


# -- the metric ------------------------------------------------------------------------------------


def test_the_budget_metric_has_one_series_per_ca_and_limit() -> None:
    metrics = ControllerMetrics()
    metrics.set_rate_budget([(CA, "newOrdersPer3h", 3), (CA, "duplicatesPerWeek", 5)])
    text = metrics.render()
    assert f'njcm_acme_rate_budget_remaining{{ca="{CA}",limit="newOrdersPer3h"}} 3.0' in text
    metrics.set_rate_budget([(CA, "newOrdersPer3h", 0)])
    text = metrics.render()
    assert f'njcm_acme_rate_budget_remaining{{ca="{CA}",limit="newOrdersPer3h"}} 0.0' in text
    assert 'limit="duplicatesPerWeek"' not in text
