"""The ARI step (controller/ari.py) inside real reconcile passes over the fakes: a window fetched
after issuance and its chosen time persisted, kept across polls and restarts, drawn again only
when a window no longer holds it; Retry-After honoured; a window fetched for the previous
certificate never scheduling the new one; a window moved into the past renewing at once with
`replaces`; the token bucket (never a burst); a CA without ARI and one whose directory cannot
be read; the loop waking for the next poll."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from controller.errors import TemporaryError
from controller.plan import ActionKind
from controller.policies.ari import DEFAULT_POLL, MIN_POLL
from controller.ports import AriPoller, AriPollerFactory
from controller.reasons import Reason
from controller.status import RENEWAL_SOURCE_ARI
from tests.fakes import spec
from tests.support.arifake import AriWorld, FakeAri, ari_world, fake_cert_id

A = spec("a.test", "www.a.test")


def test_the_fake_is_an_ari_poller() -> None:
    fake = FakeAri(lambda: datetime.now(UTC))
    poller: AriPoller = fake
    factory: AriPollerFactory = fake.factory
    assert poller is not None and factory is not None


async def issued(w: AriWorld) -> None:
    """Converge: the first pass issues, the second polls the new certificate."""
    result = await w.rec.converge()
    assert result.plan.in_sync, result.plan


async def test_an_issued_certificate_gets_a_window_and_a_time_inside_it() -> None:
    w = ari_world(A)
    await issued(w)
    stored = w.stored("a.test")
    st = w.status("a.test")
    assert st.ari is not None and st.ari.fingerprint == stored.info.fingerprint
    assert st.ari.cert_id == fake_cert_id(stored.info)
    assert st.ari.window_start is not None and st.ari.window_end is not None
    assert st.renewal_at is not None
    assert st.ari.window_start <= st.renewal_at <= st.ari.window_end
    assert (st.renewal_source, st.renewal_for) == (RENEWAL_SOURCE_ARI, stored.info.fingerprint)
    assert w.clock.now + DEFAULT_POLL <= st.ari.next_poll <= w.clock.now + DEFAULT_POLL * 1.1
    assert w.statuses.records["a.test"] == st  # saved
    assert [c for _, c in w.ari.requests] == [st.ari.cert_id]


async def test_no_poll_before_the_next_one_is_due_and_the_loop_wakes_for_it() -> None:
    w = ari_world(A)
    await issued(w)
    next_poll = w.status("a.test").ari.next_poll  # type: ignore[union-attr]
    result = await w.rec.pass_once()
    assert len(w.ari.requests) == 1
    # the next poll is sooner than the next renewal or the interval: the loop wakes then
    assert w.rec.next_deadline(result, timedelta(days=3)) == next_poll


async def test_the_chosen_time_is_kept_while_the_window_holds_it_and_drawn_again_when_not() -> None:
    w = ari_world(A)
    await issued(w)
    first = w.status("a.test").renewal_at
    assert first is not None
    for _ in range(3):
        w.clock.now = w.status("a.test").ari.next_poll  # type: ignore[union-attr]
        await w.rec.pass_once()
        assert w.status("a.test").renewal_at == first
    assert len(w.ari.requests) == 4
    ident = fake_cert_id(w.stored("a.test").info)
    # a wider window still holds it
    w.ari.move(ident, first - timedelta(days=5), first + timedelta(days=5))
    w.clock.now = w.status("a.test").ari.next_poll  # type: ignore[union-attr]
    await w.rec.pass_once()
    assert w.status("a.test").renewal_at == first
    # one that does not: a new time inside it
    start, end = first + timedelta(days=10), first + timedelta(days=11)
    w.ari.move(ident, start, end)
    w.clock.now = w.status("a.test").ari.next_poll  # type: ignore[union-attr]
    await w.rec.pass_once()
    again = w.status("a.test").renewal_at
    assert again is not None and start <= again <= end


async def test_a_restart_keeps_the_next_poll_and_the_chosen_time() -> None:
    w = ari_world(A)
    await issued(w)
    saved = dict(w.statuses.records)
    later = ari_world(A, statuses=saved.values())
    later.store = w.store
    later.rec.gatherer.store = w.store
    later.step.store = w.store
    later.rec.executor.store = w.store
    later.clock.now = w.clock.now + timedelta(hours=1)
    result = await later.rec.pass_once()
    assert result.plan.in_sync and later.ari.requests == []
    assert later.rec.statuses["a.test"].renewal_at == saved["a.test"].renewal_at


async def test_retry_after_sets_the_next_poll_within_a_minute_and_a_day() -> None:
    for retry_after, least in ((5.0, MIN_POLL), (7200.0, timedelta(hours=2)),
                               (10 * 86400.0, timedelta(hours=24))):
        w = ari_world(A, retry_after=retry_after)
        await issued(w)
        got = w.status("a.test").ari.next_poll - w.clock.now  # type: ignore[union-attr]
        assert least <= got <= min(least * 1.1, timedelta(hours=24)), (retry_after, got)


async def test_a_window_moved_into_the_past_renews_in_the_same_pass_with_replaces() -> None:
    w = ari_world(A)
    await issued(w)
    old = w.stored("a.test")
    ident = fake_cert_id(old.info)
    w.ari.move(ident, w.clock.now - timedelta(days=2), w.clock.now - timedelta(days=1))
    w.clock.now = w.status("a.test").ari.next_poll  # type: ignore[union-attr]
    result = await w.rec.pass_once()
    (a,) = result.plan.actions
    assert (a.kind, a.reason, a.replaces) == (ActionKind.RENEW, Reason.RENEWAL_DUE, ident)
    assert w.issuer.replaced == [None, ident]
    assert w.stored("a.test").info.fingerprint != old.info.fingerprint
    st = w.status("a.test")
    assert st.ari is None and st.renewal_at is None  # the new pair starts afresh
    await w.rec.pass_once()  # ... and its own window is fetched next
    new = w.status("a.test")
    assert new.ari is not None and new.ari.fingerprint == w.stored("a.test").info.fingerprint
    assert len(w.issuer.orders) == 2


async def test_a_window_of_the_previous_certificate_never_schedules_the_new_one() -> None:
    w = ari_world(A)
    await issued(w)
    old_fp = w.stored("a.test").info.fingerprint
    # a crash after the store swap, before the status write: the status still holds the old
    # certificate's window and a chosen time already past
    past = w.clock.now - timedelta(hours=1)
    st = w.status("a.test")
    assert st.ari is not None
    stale = replace(st, renewal_at=past, ari=replace(st.ari, next_poll=w.clock.now + DEFAULT_POLL))
    w.rec.update_status(stale)
    made = await w.issuer.issue(A, w.stored("a.test").info.key_type)  # type: ignore[arg-type]
    w.store.put("a.test", made)
    assert w.stored("a.test").info.fingerprint != old_fp
    result = await w.rec.pass_once()
    assert result.plan.actions == ()  # not renewed for the old certificate's time
    new = w.status("a.test")
    # the new certificate was asked about at once (no state of its own yet)
    assert new.ari is not None and new.ari.fingerprint == w.stored("a.test").info.fingerprint
    assert new.renewal_for == new.ari.fingerprint


async def test_an_answer_for_a_certificate_no_longer_stored_is_dropped() -> None:
    w = ari_world(A)
    await w.rec.pass_once()  # issued; no poll yet
    observed_fp = w.stored("a.test").info.fingerprint
    swapped = await w.issuer.issue(A, w.stored("a.test").info.key_type)  # type: ignore[arg-type]
    # the store changes right after the pass's scan: the poll reads the new PEM

    def swap() -> None:
        w.store.on_load_all = None
        w.store.put("a.test", swapped)

    w.store.on_load_all = swap
    await w.rec.pass_once()
    st = w.rec.statuses["a.test"]
    assert w.stored("a.test").info.fingerprint != observed_fp  # the swap happened
    assert st.ari is None, st.ari  # nothing kept: not for the old PEM, nor the swapped one
    assert len(w.ari.requests) == 1


async def test_a_failed_poll_backs_off_and_keeps_the_window_and_the_time() -> None:
    w = ari_world(A)
    await issued(w)
    before = w.status("a.test")
    w.ari.fail = "renewalInfo https://ca.fake/ari/x: HTTP 503"
    delays = []
    for _ in range(3):
        w.clock.now = w.status("a.test").ari.next_poll  # type: ignore[union-attr]
        await w.rec.pass_once()
        st = w.status("a.test")
        assert st.ari is not None and st.ari.last_error is not None
        delays.append(st.ari.next_poll - w.clock.now)
        assert (st.renewal_at, st.ari.window_start) == (before.renewal_at,
                                                        before.ari.window_start)  # type: ignore[union-attr]
    assert [round(d / timedelta(minutes=1)) for d in delays] == [1, 2, 4]
    w.ari.fail = None
    w.clock.now = w.status("a.test").ari.next_poll  # type: ignore[union-attr]
    await w.rec.pass_once()
    assert w.status("a.test").ari.errors == 0  # type: ignore[union-attr]


async def test_never_a_burst_the_bucket_bounds_every_pass() -> None:
    specs = [spec(f"n{i}.test") for i in range(30)]
    w = ari_world(*specs)
    await w.rec.pass_once()  # 30 issued
    assert len(w.issuer.orders) == 30
    await w.rec.pass_once()
    assert len(w.ari.requests) == 20  # BURST
    wake = w.step.next_wake()
    assert wake is not None and wake >= w.clock.now + timedelta(minutes=1)
    w.clock.advance(timedelta(minutes=5))  # at least one a minute: five more tokens
    await w.rec.pass_once()
    assert len(w.ari.requests) == 25
    w.clock.advance(timedelta(minutes=5))
    await w.rec.pass_once()
    assert len(w.ari.requests) == 30
    assert len({c for _, c in w.ari.requests}) == 30  # each asked once


async def test_a_ca_without_ari_turns_the_step_off_and_changes_nothing() -> None:
    w = ari_world(A)
    w.ari.offered = False
    calls: list[bool] = []
    original = w.ari.supported

    async def counted() -> bool:
        calls.append(True)
        return await original()

    w.ari.supported = counted  # type: ignore[method-assign]
    await issued(w)
    st = w.status("a.test")
    assert w.ari.requests == [] and st.ari is None and st.renewal_at is None
    assert w.step.next_wake() is None
    w.clock.advance(timedelta(days=1))
    await w.rec.pass_once()
    assert calls == [True]  # asked once in this process, never again


async def test_a_certificate_whose_renewal_backs_off_is_not_asked_about() -> None:
    w = ari_world(A)
    await w.rec.pass_once()  # issued
    cur = w.rec.statuses["a.test"]
    w.rec.update_status(replace(cur, force_renew=True))
    w.issuer.fail.append(TemporaryError("rateLimited", retry_after=600))
    await w.rec.pass_once()  # the ARI step ran before the renewal failed: asked once
    assert len(w.ari.requests) == 1
    w.rec.update_status(replace(w.rec.statuses["a.test"], ari=None))  # as if never asked
    await w.rec.pass_once()  # in backoff: not asked, nothing sent
    assert len(w.ari.requests) == 1


async def test_an_unreadable_directory_is_tried_again_later_not_every_pass() -> None:
    w = ari_world(A)
    await w.rec.pass_once()
    w.ari.unreachable = True
    await w.rec.pass_once()
    first = w.step.next_wake()
    assert first == w.clock.now + timedelta(minutes=1)
    await w.rec.pass_once()  # within the minute: not tried
    assert w.step.next_wake() == first
    w.ari.unreachable = False
    w.clock.now = first
    await w.rec.pass_once()
    assert w.status("a.test").ari is not None


async def test_every_request_is_counted_by_result() -> None:
    w = ari_world(A)
    seen: list[str] = []
    w.step.on_request = seen.append
    await issued(w)
    w.ari.fail = "HTTP 500"
    w.clock.now = w.status("a.test").ari.next_poll  # type: ignore[union-attr]
    await w.rec.pass_once()
    assert seen == ["ok", "error"]


async def test_an_expired_or_orphaned_certificate_is_not_asked_about() -> None:
    w = ari_world(A, lifetime=timedelta(days=6))
    await w.rec.pass_once()  # issued; polled from the next pass on
    old = w.stored("a.test").info
    w.clock.now = old.not_after + timedelta(minutes=1)
    result = await w.rec.pass_once()
    assert w.ari.requests == []  # RFC 9773 §4.3: never after expiry
    assert [a.reason for a in result.plan.actions] == [Reason.EXPIRED]
    await w.rec.pass_once()  # the new certificate is asked about
    assert [c for _, c in w.ari.requests] == [fake_cert_id(w.stored("a.test").info)]
    w.desired.specs = []
    w.clock.now = w.status("a.test").ari.next_poll  # type: ignore[union-attr]
    await w.rec.pass_once()
    assert len(w.ari.requests) == 1  # no longer desired: not asked


async def test_a_ca_answering_past_windows_for_everything_renews_once_an_hour_not_in_a_loop(
) -> None:
    w = ari_world(A)
    w.ari.window = lambda _info: (w.clock.now - timedelta(days=2), w.clock.now - timedelta(days=1))
    result = await w.rec.converge()
    assert len(w.issuer.orders) == 1 and result.plan.in_sync  # the new one waits its hour
    st = w.status("a.test")
    assert st.issued_at is not None and st.renewal_at == st.issued_at + timedelta(hours=1)
    end = w.clock.now + timedelta(hours=5)
    while w.clock.now < end:
        result = await w.rec.converge()
        w.clock.now = w.rec.next_deadline(result, timedelta(hours=24))
    assert 4 <= len(w.issuer.orders) <= 6  # one an hour


async def test_the_pass_feeds_the_next_poll_and_the_chosen_renewal_time_to_metrics() -> None:
    from controller.admin_backend import ControllerBackend
    from controller.metrics import ControllerMetrics
    from controller.reconcile import Loop

    w = ari_world(A)
    b = ControllerBackend(reconciler=w.rec, loop=Loop(w.rec, timedelta(hours=1)),
                          metrics=ControllerMetrics(), mqtt_state={"connected": False})
    w.rec.observer = b
    w.step.on_request = b.metrics.observe_ari_request
    await issued(w)
    st = w.status("a.test")
    assert st.ari is not None and st.renewal_at is not None
    text = b.metrics.render()
    assert (f'njcm_certificate_ari_next_poll_timestamp_seconds{{name="a.test"}} '
            f"{st.ari.next_poll.timestamp()!r}") in text
    assert (f'njcm_certificate_renewal_timestamp_seconds{{name="a.test"}} '
            f"{st.renewal_at.timestamp()!r}") in text
    assert 'njcm_ari_requests_total{result="ok"} 1.0' in text
