"""fold(): status after a pass, named by behaviour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.fold import Outcome, fold
from controller.model import CertificateSpec, Desired, KeyType
from controller.plan import Action, ActionKind, Plan, Scheduled
from controller.reasons import Reason
from controller.status import CertStatus, backoff_delay

NOW = datetime(2026, 11, 27, tzinfo=UTC)
SPEC = CertificateSpec(domain="a.test", names=("a.test",))
DESIRED = Desired(specs={"a.test": SPEC})


def issue(kind: ActionKind = ActionKind.ISSUE) -> Action:
    return Action(
        kind, "a.test", Reason.MISSING, "", spec=SPEC, key_type=KeyType.EC256, spec_hash="h1"
    )


def test_a_failure_counts_an_attempt_and_backs_off_exponentially() -> None:
    st: dict[str, CertStatus] = {}
    for n in (1, 2, 3):
        st, _ = fold(
            st,
            desired=DESIRED,
            plan=Plan(),
            outcomes=[Outcome(issue(), ok=False, error="CA down")],
            now=NOW,
        )
        assert st["a.test"].attempts == n
        assert st["a.test"].backoff_until == NOW + backoff_delay(n)
    assert st["a.test"].last_failure == "CA down"


def test_retry_after_longer_than_the_backoff_wins() -> None:
    st, _ = fold(
        {},
        desired=DESIRED,
        plan=Plan(),
        outcomes=[Outcome(issue(), ok=False, error="429", retry_after=3600)],
        now=NOW,
    )
    assert st["a.test"].backoff_until == NOW + timedelta(hours=1)


def test_success_resets_attempts_and_backoff() -> None:
    failed = {
        "a.test": CertStatus(
            domain="a.test", attempts=4, backoff_until=NOW, spec_hash="h1", force_renew=True
        )
    }
    st, _ = fold(
        failed,
        desired=DESIRED,
        plan=Plan(),
        outcomes=[
            Outcome(
                issue(ActionKind.RENEW), ok=True, stored_fingerprint="ab", served_fingerprint="ab"
            )
        ],
        now=NOW,
    )
    s = st["a.test"]
    assert (s.attempts, s.backoff_until, s.force_renew) == (0, None, False)
    assert s.applied_fingerprint == "ab" and s.last_success_at == NOW


def test_a_new_spec_starts_counting_attempts_again() -> None:
    old = {"a.test": CertStatus(domain="a.test", attempts=6, spec_hash="old")}
    st, _ = fold(
        old, desired=DESIRED, plan=Plan(), outcomes=[Outcome(issue(), ok=False, error="x")], now=NOW
    )
    assert st["a.test"].attempts == 1 and st["a.test"].spec_hash == "h1"


def test_the_code_11_trap_asks_for_a_fresh_key() -> None:
    st, _ = fold(
        {},
        desired=DESIRED,
        plan=Plan(),
        outcomes=[Outcome(issue(ActionKind.APPLY), ok=False, error="repeated", needs_new_key=True)],
        now=NOW,
    )
    assert st["a.test"].force_renew is True and st["a.test"].backoff_until is not None


def test_skipped_actions_change_nothing() -> None:
    st, _ = fold(
        {},
        desired=DESIRED,
        plan=Plan(),
        outcomes=[Outcome(issue(), ok=False, skipped=True, error="raced")],
        now=NOW,
    )
    assert st["a.test"] == CertStatus(domain="a.test")


def test_desired_names_get_a_status_and_orphans_get_stamped_once() -> None:
    plan = Plan(scheduled=(Scheduled("old.test", Reason.ORPHAN_GRACE, ""),))
    st, _ = fold(
        {"old.test": CertStatus(domain="old.test")},
        desired=DESIRED,
        plan=plan,
        outcomes=[],
        now=NOW,
    )
    assert "a.test" in st and st["old.test"].orphaned_at == NOW
    later, _ = fold(st, desired=DESIRED, plan=plan, outcomes=[], now=NOW + timedelta(hours=1))
    assert later["old.test"].orphaned_at == NOW


def test_a_name_that_comes_back_is_no_longer_orphaned() -> None:
    st, _ = fold(
        {"a.test": CertStatus(domain="a.test", orphaned_at=NOW)},
        desired=DESIRED,
        plan=Plan(),
        outcomes=[],
        now=NOW,
    )
    assert st["a.test"].orphaned_at is None


def test_a_done_delete_removes_the_status() -> None:
    act = Action(ActionKind.DELETE, "old.test", Reason.NOT_DESIRED, "")
    st, removed = fold(
        {"old.test": CertStatus(domain="old.test")},
        desired=Desired(specs={}),
        plan=Plan(),
        outcomes=[Outcome(act, ok=True)],
        now=NOW,
    )
    assert "old.test" not in st and removed == {"old.test"}


def test_a_probe_showing_the_stored_cert_served_records_it_as_applied() -> None:
    from controller.model import CertInfo, Observed, ServedCert, StoredCert

    info = CertInfo(
        "a.test",
        ("a.test",),
        NOW,
        NOW + timedelta(days=90),
        KeyType.EC256,
        "01",
        "ab" * 32,
        "CN=CA",
    )
    obs = Observed(
        stored={"a.test": StoredCert("a.test", info, True)},
        served={"a.test": ServedCert("a.test", "127.0.0.1:8443", "ab" * 32)},
    )
    st, _ = fold({}, desired=DESIRED, plan=Plan(), outcomes=[], now=NOW, observed=obs)
    assert st["a.test"].applied_fingerprint == "ab" * 32
    other = Observed(
        stored=obs.stored, served={"a.test": ServedCert("a.test", "127.0.0.1:8443", "cd" * 32)}
    )
    st2, _ = fold({}, desired=DESIRED, plan=Plan(), outcomes=[], now=NOW, observed=other)
    assert st2["a.test"].applied_fingerprint is None


def test_a_renewed_cert_caught_in_the_code_11_trap_still_asks_for_a_fresh_key() -> None:
    st, _ = fold(
        {},
        desired=DESIRED,
        plan=Plan(),
        outcomes=[
            Outcome(
                issue(ActionKind.RENEW),
                ok=False,
                error="repeated",
                stored_fingerprint="ab",
                needs_new_key=True,
            )
        ],
        now=NOW,
    )
    assert st["a.test"].force_renew is True and st["a.test"].force_renew_of == "ab"


def test_an_operators_renewal_request_forgives_the_backoff_the_code_11_trap_does_not() -> None:
    failing = CertStatus(domain="a.test", attempts=3, backoff_until=NOW + timedelta(minutes=4),
                         spec_hash="h1")
    asked = failing.with_forced_renewal(of="ab", at=NOW)
    assert (asked.force_renew, asked.force_renew_of) == (True, "ab")
    assert (asked.attempts, asked.backoff_until) == (0, None)
    trapped = failing.with_new_key_needed(of="ab")
    assert (trapped.force_renew, trapped.force_renew_of) == (True, "ab")
    assert (trapped.attempts, trapped.backoff_until) == (3, failing.backoff_until)


def test_a_new_pair_clears_the_chosen_renewal_time_and_the_served_mark() -> None:
    before = CertStatus(domain="a.test", renewal_at=NOW, applied_fingerprint="ab",
                        applied_at=NOW, force_renew=True, force_renew_of="ab")
    st, _ = fold({"a.test": before}, desired=DESIRED, plan=Plan(),
                 outcomes=[Outcome(issue(ActionKind.RENEW), ok=True, stored_fingerprint="cd")],
                 now=NOW)
    s = st["a.test"]
    assert (s.renewal_at, s.applied_fingerprint, s.force_renew, s.force_renew_of) == (
        None, None, False, None)
    assert s.spec_hash == "h1" and s.last_success_at == NOW


def test_a_probe_showing_another_cert_forgets_the_old_proof_of_serving() -> None:
    """Otherwise a failed re-apply would look served on every pass until the next probe."""
    from controller.model import CertInfo, Observed, ServedCert, StoredCert

    info = CertInfo("a.test", ("a.test",), NOW, NOW + timedelta(days=90), KeyType.EC256, "01",
                    "ab" * 32, "CN=CA")
    proved = {"a.test": CertStatus(domain="a.test").with_applied("ab" * 32, at=NOW)}
    stored = {"a.test": StoredCert("a.test", info, True)}
    for shown in ("cd" * 32, None):  # another certificate, or a failed handshake
        obs = Observed(stored=stored,
                       served={"a.test": ServedCert("a.test", "127.0.0.1:8443", shown)})
        st, _ = fold(proved, desired=DESIRED, plan=Plan(), outcomes=[], now=NOW, observed=obs)
        assert st["a.test"].applied_fingerprint is None
    still = Observed(stored=stored,
                     served={"a.test": ServedCert("a.test", "127.0.0.1:8443", "ab" * 32)})
    st, _ = fold(proved, desired=DESIRED, plan=Plan(), outcomes=[], now=NOW, observed=still)
    assert st["a.test"].applied_fingerprint == "ab" * 32
    assert st["a.test"].applied_at == proved["a.test"].applied_at
