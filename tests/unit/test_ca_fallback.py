"""CA fallback (issue 10 item 4): the pure CA choice (policies/fallback.py) as a table, the
executor ordering from the CA it picks and going on at the next one within an attempt, the
streaks and the issuing CA kept in the status (fold.py, status.py), `[[acme.fallback]]` in the
TOML, the composite issuer (adapters/acme/multi.py: one account per CA, lazily built), the
client's CaUnreachableError for a directory nothing answers at, and the issuer metric."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.acme.client import AcmeIssuer
from controller.adapters.acme.multi import CaFallbackIssuer, ca_settings
from controller.adapters.challenges.solvers import SolverSet
from controller.config import parse_config
from controller.errors import (
    CaUnreachableError,
    ConfigError,
    ControllerError,
    PermanentError,
    TemporaryError,
)
from controller.execute import Executor
from controller.fold import Outcome, fold
from controller.metrics import ControllerMetrics
from controller.model import ChallengeType, Desired, KeyType
from controller.paths import StorePaths
from controller.plan import Action, ActionKind, Plan
from controller.policies.fallback import (
    CaFailure,
    after_failure,
    choose_ca,
    failure_of,
    fallback_start,
    next_ca,
)
from controller.ports import CaChoices, Issuer
from controller.reasons import Reason
from controller.status import CaStreak, CertStatus, status_from_json, status_to_json
from tests.fakes import START, FakeClock, FakeIssuer, MemoryStore, spec
from tests.support.hackmods import free_tcp_port

P, F, G = "https://primary.test/dir", "https://fallback.test/dir", "https://third.test/dir"
CAS = (P, F)
A = spec("a.test", "www.a.test")


# -- the pure choice -------------------------------------------------------------------------

@pytest.mark.parametrize(("failures", "after", "tried", "expected"), [
    ({}, 2, (), 0),                       # nothing failed: the primary
    ({P: 1}, 2, (), 0),                   # below fallbackAfter: still the primary
    ({P: 2}, 2, (), 1),                   # the primary reached it: the fallback
    ({P: 1}, 1, (), 1),                   # fallbackAfter = 1
    ({P: 2}, 3, (), 0),                   # fallbackAfter = 3: two are not enough
    ({P: 3}, 3, (), 1),
    ({P: 2, F: 2}, 2, (), 0),             # every CA reached it: the fewest, earlier on a tie
    ({P: 3, F: 2}, 2, (), 1),             # ... so failing CAs take turns
    ({}, 2, (0,), 1),                     # within an attempt each CA once
    ({}, 2, (0, 1), None),
    ({F: 5}, 2, (), 0),                   # a fallback's streak never blocks the primary
])
def test_choose_ca(failures: dict[str, int], after: int, tried: tuple[int, ...],
                   expected: int | None) -> None:
    assert choose_ca(CAS, failures, after, tried=tried) == expected


@pytest.mark.parametrize(("before", "failure", "after", "expected"), [
    ({}, CaFailure.FAILING, 2, {P: 1}),
    ({P: 1}, CaFailure.FAILING, 2, {P: 2}),
    ({}, CaFailure.UNREACHABLE, 3, {P: 3}),   # exhausted at once
    ({P: 4}, CaFailure.UNREACHABLE, 3, {P: 5}),
    ({}, CaFailure.UNUSABLE, 2, {P: 2}),
    ({P: 1, F: 2}, CaFailure.REJECTED, 2, {F: 2}),  # the CA answers: its streak ends
])
def test_after_failure(before: dict[str, int], failure: CaFailure, after: int,
                       expected: dict[str, int]) -> None:
    assert after_failure(before, P, failure, after) == expected


@pytest.mark.parametrize(("failures", "failure", "expected"), [
    ({P: 1}, CaFailure.FAILING, None),      # below fallbackAfter: the attempt ends
    ({P: 2}, CaFailure.FAILING, 1),         # reached it: the next CA, same attempt
    ({P: 2}, CaFailure.UNREACHABLE, 1),
    ({P: 2}, CaFailure.UNUSABLE, 1),
    ({}, CaFailure.REJECTED, None),         # a refusal of the name never falls back
])
def test_next_ca(failures: dict[str, int], failure: CaFailure, expected: int | None) -> None:
    assert next_ca(CAS, failures, 2, tried=[0], failure=failure) == expected


def test_diff_says_when_an_order_starts_at_a_fallback_ca() -> None:
    from controller.render import plan_to_dict, plan_to_text

    assert fallback_start(CAS, {}, 2) is None  # [acme]'s: nothing to say
    assert fallback_start(CAS, {P: 1}, 2) is None
    assert fallback_start(CAS, {P: 2, F: 1}, 2) == F
    assert fallback_start((P,), {P: 9}, 2) is None  # no fallback configured
    action = Action(ActionKind.RENEW, "a.test", Reason.RENEWAL_DUE, "due", spec=A,
                    key_type=KeyType.EC256, ca=F)
    assert f" ca={F}  [RenewalDue]" in plan_to_text(Plan(actions=(action,)))
    assert plan_to_dict(Plan(actions=(action,)))["actions"][0]["ca"] == F


def test_the_plan_copies_the_streaks_and_names_the_starting_ca() -> None:
    from controller.model import Observed
    from controller.plan import plan
    from controller.policy import PolicySettings

    settings = PolicySettings(store_only=True, cas=CAS, fallback_after=2)
    st = CertStatus(domain="a.test").with_ca_failures({P: 2, F: 1})
    p = plan(Desired({"a.test": A}), Observed({}), {"a.test": st}, START, settings)
    [action] = p.actions
    assert action.kind is ActionKind.ISSUE
    assert action.ca_failures == st.ca_failures and action.ca == F
    fresh = plan(Desired({"a.test": A}), Observed({}), {}, START, settings)
    assert fresh.actions[0].ca is None and fresh.actions[0].ca_failures == ()


def test_failure_kinds_follow_the_error_classes() -> None:
    assert failure_of(CaUnreachableError("x")) is CaFailure.UNREACHABLE
    assert failure_of(TemporaryError("503")) is CaFailure.FAILING
    assert failure_of(PermanentError("rejectedIdentifier")) is CaFailure.REJECTED
    assert failure_of(ConfigError("bad EAB")) is CaFailure.UNUSABLE


# -- the executor over a fake issuer of several CAs ------------------------------------------

OK = "ok"
ERRORS: dict[str, ControllerError] = {
    "503": TemporaryError("the CA answered HTTP 503", retry_after=60),
    "down": CaUnreachableError("cannot load the ACME directory: Connection refused"),
    "reject": PermanentError("rejectedIdentifier"),
    "config": ConfigError("eab rejected"),
}


@dataclass
class FakeCas:
    """An Issuer with the CaChoices capability: one FakeIssuer per CA, every order logged."""

    cas: tuple[str, ...]
    fallback_after: int
    clock: FakeClock
    log: list[int] = field(default_factory=list)
    issuers: dict[int, FakeIssuer] = field(default_factory=dict)

    def script(self, index: int, *results: str) -> None:
        self.issuer(index).fail.extend(ERRORS[r] for r in results if r != OK)

    def issuer(self, index: int) -> FakeIssuer:
        return self.issuers.setdefault(index, FakeIssuer(self.clock))

    async def for_ca(self, index: int) -> Issuer:
        self.log.append(index)
        return self.issuer(index)

    async def issue(self, *args: Any, **kwargs: Any) -> Any:
        return await self.issuer(0).issue(*args, **kwargs)

    async def revoke(self, cert_pem: bytes) -> None:
        await self.issuer(0).revoke(cert_pem)

    async def close(self) -> None:
        pass

    async def factory(self) -> FakeCas:
        return self


@dataclass
class Cert:
    """One certificate driven attempt after attempt: action from status, execute, fold."""

    cas: FakeCas
    store: MemoryStore = field(default_factory=MemoryStore)
    status: CertStatus = field(default_factory=lambda: CertStatus(domain="a.test"))

    async def attempt(self) -> tuple[list[int], Outcome]:
        got = self.store.get("a.test")
        kind = ActionKind.RENEW if got is not None else ActionKind.ISSUE
        action = Action(kind, "a.test", Reason.MISSING, "", spec=A, key_type=KeyType.EC256,
                        expected_fingerprint=got.info.fingerprint if got else None,
                        spec_hash="h", ca_failures=self.status.ca_failures)
        executor = Executor(store=self.store, issuer_factory=self.cas.factory,
                            clock=self.cas.clock)
        start = len(self.cas.log)
        [outcome] = await executor.execute([action])
        out, _ = fold({"a.test": self.status}, desired=Desired({"a.test": A}),
                      plan=Plan(actions=(action,)), outcomes=[outcome], now=self.cas.clock())
        self.status = out["a.test"]
        return self.cas.log[start:], outcome


# one row: fallbackAfter, what each CA answers (in order), the CAs each attempt tried
SCENARIOS = [
    pytest.param(1, {0: ["503"]}, [[0, 1]], id="fallbackAfter=1: the fallback in the same pass"),
    pytest.param(2, {0: ["503", "503"]}, [[0], [0, 1]], id="fallbackAfter=2: at the 2nd failure"),
    pytest.param(3, {0: ["503"] * 3}, [[0], [0], [0, 1]], id="fallbackAfter=3"),
    pytest.param(3, {0: ["down"]}, [[0, 1]], id="unreachable: the same pass, whatever the count"),
    pytest.param(2, {0: ["reject"] * 3, 1: []}, [[0], [0], [0]],
                 id="a rejected name never falls back"),
    pytest.param(2, {0: ["503", "reject", "503"]}, [[0], [0], [0]],
                 id="a rejection ends the primary's streak"),
    pytest.param(2, {0: ["503", "503", "503"], 1: ["503", "503"]},
                 [[0], [0, 1], [1, 0], [1]], id="both failing: they take turns"),
    pytest.param(1, {0: ["down", "down"], 1: ["config"]}, [[0, 1], [0, 1]],
                 id="a fallback that cannot be used: back at the primary next time"),
]


@pytest.mark.parametrize(("after", "answers", "expected"), SCENARIOS)
async def test_which_ca_each_attempt_orders_from(
    after: int, answers: dict[int, list[str]], expected: list[list[int]]
) -> None:
    cas = FakeCas(CAS, after, FakeClock())
    for index, results in answers.items():
        cas.script(index, *results)
    cert = Cert(cas)
    seen = [(await cert.attempt())[0] for _ in expected]
    assert seen == expected


async def test_success_on_the_fallback_then_the_next_renewal_starts_at_the_primary() -> None:
    cas = FakeCas(CAS, 2, FakeClock())
    cas.script(0, "down")
    cert = Cert(cas)
    tried, outcome = await cert.attempt()
    assert tried == [0, 1] and outcome.ok
    assert outcome.issuer_ca == F
    assert cert.status.issuer_ca == F and cert.status.ca_failures == ()
    assert cert.store.get("a.test") is not None

    tried, outcome = await cert.attempt()  # the next renewal (the primary is back)
    assert tried == [0] and outcome.ok and outcome.action.kind is ActionKind.RENEW
    assert cert.status.issuer_ca == P


async def test_a_failed_attempt_keeps_the_streaks_and_every_cas_error() -> None:
    cas = FakeCas(CAS, 1, FakeClock())
    cas.script(0, "503")
    cas.script(1, "503")
    cert = Cert(cas)
    tried, outcome = await cert.attempt()
    assert tried == [0, 1] and not outcome.ok
    assert outcome.error == "the CA answered HTTP 503; then the CA answered HTTP 503"
    assert outcome.retry_after == 60  # the last CA's Retry-After sets the backoff
    assert cert.status.ca_failures == (CaStreak(F, 1), CaStreak(P, 1))
    assert cert.status.attempts == 1 and cert.status.backoff_until is not None
    assert cert.status.issuer_ca is None


async def test_a_plain_issuer_orders_as_before_and_records_no_ca() -> None:
    clock = FakeClock()
    issuer = FakeIssuer(clock)
    issuer.fail.append(TemporaryError("503", retry_after=5))
    store = MemoryStore()
    executor = Executor(store=store, issuer_factory=issuer.factory, clock=clock)
    action = Action(ActionKind.ISSUE, "a.test", Reason.MISSING, "", spec=A,
                    key_type=KeyType.EC256)
    [failed] = await executor.execute([action])
    assert (failed.ok, failed.error, failed.retry_after, failed.ca_failures) == (
        False, "503", 5, None)
    [done] = await executor.execute([action])
    assert done.ok and done.issuer_ca is None


def test_the_status_file_keeps_the_issuing_ca_and_the_streaks() -> None:
    st = CertStatus(domain="a.test").with_ca_failures({P: 2, F: 0})
    assert st.ca_failures == (CaStreak(P, 2),) and st.ca_failure_counts() == {P: 2}
    back = status_from_json(status_to_json(st.with_issuer_ca(F)))
    assert back.issuer_ca == F and back.ca_failures == ()
    assert status_from_json(status_to_json(st)) == st


# -- [[acme.fallback]] in the TOML -----------------------------------------------------------

HMAC = base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")


def load(acme: dict[str, Any], tmp_path: Path) -> Any:
    return parse_config({"acme": acme}, prefix=tmp_path, source="cm.toml")


def test_fallback_entries_keep_their_order_and_settings(tmp_path: Path) -> None:
    cfg = load({"acmeCaDir": P, "email": "ops@example.test", "fallbackAfter": 3, "fallback": [
        {"acmeCaDir": F, "caBundle": "conf/f.pem", "eabKid": "kid", "eabHmacKey": HMAC,
         "profile": "classic"},
        {"acmeCaDir": G, "email": "other@example.test"},
    ]}, tmp_path)
    assert cfg.acme.fallbackAfter == 3
    settings = ca_settings(cfg)
    assert [(c.directory_url, c.key, c.email) for c in settings] == [
        (P, "[acme]", "ops@example.test"),
        (F, "acme.fallback[0]", "ops@example.test"),  # email unset: [acme]'s
        (G, "acme.fallback[1]", "other@example.test"),
    ]
    assert settings[1].ca_bundle == tmp_path / "conf/f.pem"
    assert (settings[1].eab_kid, settings[1].profile) == ("kid", "classic")
    assert settings[2].ca_bundle is None
    assert load({}, tmp_path).acme.fallbackAfter == 2


@pytest.mark.parametrize(("acme", "named"), [
    ({"fallback": [{"caBundle": "x"}]}, "acme.fallback[0].acmeCaDir: Field required"),
    ({"fallback": [{"acmeCaDir": F}, {"acmeCaDir": "ftp://s3cr3t/"}]},
     "acme.fallback[1].acmeCaDir: "),
    ({"fallback": [{"acmeCaDir": F, "eabKid": "s3cr3t"}]},
     "acme.fallback[0]: Value error, eabKid and eabHmacKey must be set together"),
    ({"fallback": [{"acmeCaDir": F, "eabKid": "k", "eabHmacKey": "s3cr3t!!"}]},
     "acme.fallback[0]: Value error, eabHmacKey is not base64url"),
    ({"fallback": [{"acmeCaDir": F, "email": "s3cr3t"}]}, "acme.fallback[0]: "),
    ({"fallback": {"acmeCaDir": F}}, "acme.fallback: Value error, must be a list of tables"),
    ({"fallback": ["s3cr3t"]}, "acme.fallback: Value error, entry [0] is not a table"),
    ({"acmeCaDir": F, "fallback": [{"acmeCaDir": F}]},
     "acme.fallback[0].acmeCaDir: the same CA as acme.acmeCaDir"),
    ({"fallback": [{"acmeCaDir": F}, {"acmeCaDir": F}]},
     "acme.fallback[1].acmeCaDir: the same CA as acme.fallback[0].acmeCaDir"),
    ({"fallbackAfter": 0}, "acme.fallbackAfter: "),
])
def test_bad_fallback_entries_name_the_key_never_the_value(
    acme: dict[str, Any], named: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        load(acme, tmp_path)
    assert str(err.value).startswith("cm.toml: ") and named in str(err.value)
    assert "s3cr3t" not in str(err.value)


def test_an_unknown_key_in_a_fallback_entry_is_a_warning_naming_it(tmp_path: Path) -> None:
    from controller.config import unknown_keys

    cfg = load({"fallback": [{"acmeCaDir": F, "challengeType": "tls"}]}, tmp_path)
    assert unknown_keys(cfg) == ["acme.fallback[0].challengeType"]


# -- the composite issuer ---------------------------------------------------------------------

def composite(tmp_path: Path, **acme: Any) -> CaFallbackIssuer:
    cfg = load({"acmeCaDir": P, "email": "ops@example.test", **acme}, tmp_path)
    solvers = SolverSet({ChallengeType.HTTP: lambda: pytest.fail("no solver is needed")})
    return CaFallbackIssuer.from_config(cfg, StorePaths(tmp_path), solvers)


async def test_one_account_per_ca_in_lego_layout_each_built_on_first_use(tmp_path: Path) -> None:
    multi = composite(tmp_path, fallback=[{"acmeCaDir": "https://127.0.0.1:14001/dir"}],
                      fallbackAfter=1)
    assert isinstance(multi, CaChoices)
    assert multi.cas == (P, "https://127.0.0.1:14001/dir") and multi.fallback_after == 1
    assert multi._issuers == {}  # nothing built before an order needs it
    fallback = await multi.for_ca(1)
    assert isinstance(fallback, AcmeIssuer) and await multi.for_ca(1) is fallback
    assert list(multi._issuers) == [1]
    accounts = tmp_path / ".lego" / "accounts"
    assert fallback.files.directory == accounts / "127.0.0.1_14001" / "ops@example.test"
    assert (await multi.for_ca(0)).files.directory == accounts / "primary.test" / "ops@example.test"


async def test_a_fallbacks_unreadable_ca_bundle_names_its_key(tmp_path: Path) -> None:
    multi = composite(tmp_path, fallback=[{"acmeCaDir": F, "caBundle": "missing.pem"}])
    with pytest.raises(ConfigError, match=r"^acme\.fallback\[0\]\.caBundle .*missing\.pem"):
        await multi.for_ca(1)
    assert 1 not in multi._issuers  # tried again at the next order


async def test_stop_reaches_every_ca_also_one_built_later(tmp_path: Path) -> None:
    multi = composite(tmp_path, fallback=[{"acmeCaDir": F}])
    primary = await multi.for_ca(0)
    multi.stop()
    later = await multi.for_ca(1)
    for issuer in (primary, later):
        with pytest.raises(TemporaryError, match="stopping"):
            await issuer.issue(A, KeyType.EC256)
    await multi.close()


async def test_a_directory_nothing_answers_at_is_unreachable(tmp_path: Path) -> None:
    closed = free_tcp_port()  # nothing listens there: connection refused
    issuer = AcmeIssuer(directory_url=f"https://127.0.0.1:{closed}/dir", email="",
                        paths=StorePaths(tmp_path),
                        solver=_NoSolver(), request_timeout=(2.0, 2.0))
    with pytest.raises(CaUnreachableError, match=f"cannot load the ACME directory https://127"
                                                 f".0.0.1:{closed}/dir: .*refused"):
        await issuer.issue(A, KeyType.EC256)
    await issuer.close()


class _NoSolver:
    challenge_type = "http-01"

    async def present(self, domain: str, token: str, key_authorization: str) -> None:
        raise AssertionError("no challenge expected")

    async def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        raise AssertionError("no challenge expected")

    async def close(self) -> None:
        pass


# -- the metric -------------------------------------------------------------------------------

def test_the_issuer_metric_names_the_ca_of_each_certificate() -> None:
    m = ControllerMetrics()
    m.set_certificate_issuer("a.test", F)
    m.set_certificate_issuer("b.test", P)
    text = m.render()
    assert f'njcm_certificate_issuer_info{{name="a.test",ca="{F}"}} 1.0' in text
    assert f'njcm_certificate_issuer_info{{name="b.test",ca="{P}"}} 1.0' in text
    m.set_certificate_issuer("a.test", P)  # renewed at the primary: one series, the new CA
    text = m.render()
    assert f'name="a.test",ca="{F}"' not in text
    assert f'njcm_certificate_issuer_info{{name="a.test",ca="{P}"}} 1.0' in text
    m.set_certificate_issuer("b.test", None)
    m.drop_certificate("a.test")
    assert 'njcm_certificate_issuer_info{' not in m.render()
