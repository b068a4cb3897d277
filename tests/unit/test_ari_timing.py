"""Renewal timing under ARI with an injected clock, over 6-, 47-, 90- and 200-day lifetimes: the
controller runs its real passes (plan, execute, fold, the ARI step) against the fakes, and the
clock jumps to each deadline the loop would wait for (Reconciler.next_deadline), so a simulated
year takes a fraction of a second and nothing is timed.

For each lifetime: no certificate is renewed before its window opens or after it closes (none
loops, none renews late), the renewal orders name what they replace, and a window moved into
the past in mid-life (the CA revoking) renews within one poll interval. A window suggested
past the emergency point (less than a tenth of the lifetime left) renews at that point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from controller.model import CertInfo
from controller.policies.ari import DEFAULT_POLL, POLL_JITTER, clamp_poll
from tests.fakes import spec
from tests.support.arifake import AriWorld, ari_world, fake_cert_id, middle_third

A = spec("a.test")
LOOP_INTERVAL = timedelta(hours=24)  # [controller] interval: the loop wakes at least this often


@dataclass
class Renewal:
    at: datetime
    old: CertInfo
    window: tuple[datetime, datetime] | None
    replaces: str | None


@dataclass
class Run:
    world: AriWorld
    renewals: list[Renewal] = field(default_factory=list)
    passes: int = 0
    revoked_at: datetime | None = None


async def simulate(w: AriWorld, *, span: timedelta, revoke_at: datetime | None = None) -> Run:
    """Passes as the Loop runs them (converge: again while actions; then wait for the next
    deadline) until `span` has passed; at `revoke_at` the CA moves the stored certificate's
    window into the past (the controller learns it at its next poll)."""
    run = Run(w)
    end = w.clock.now + span
    while w.clock.now < end:
        before = w.store.get("a.test")
        state = w.rec.statuses.get("a.test")
        window = None
        if state is not None and state.ari is not None and state.ari.window_start is not None:
            assert state.ari.window_end is not None
            window = (state.ari.window_start, state.ari.window_end)
        result = await w.rec.pass_once()
        run.passes += 1
        assert run.passes < 5000, "the loop spins"
        after = w.store.get("a.test")
        if before is not None and after is not None and (
                after.info.fingerprint != before.info.fingerprint):
            run.renewals.append(Renewal(w.clock.now, before.info, window, w.issuer.replaced[-1]))
        if result.plan.actions:
            continue  # converge: another pass at once
        deadline = w.rec.next_deadline(result, LOOP_INTERVAL)
        if revoke_at is not None and run.revoked_at is None and deadline >= revoke_at:
            w.clock.now = revoke_at
            stored = w.stored("a.test")
            w.ari.move(fake_cert_id(stored.info), revoke_at - timedelta(hours=2),
                       revoke_at - timedelta(hours=1))
            run.revoked_at = revoke_at
            continue
        w.clock.now = deadline
    return run


def poll_interval(retry_after: float | None) -> timedelta:
    base = DEFAULT_POLL if retry_after is None else clamp_poll(retry_after)
    return base * (1 + POLL_JITTER)


LIFETIMES = [
    (timedelta(days=6), None),
    (timedelta(days=47), None),
    (timedelta(days=90), 86400.0),
    (timedelta(days=200), 86400.0),
]


@pytest.mark.parametrize(("lifetime", "retry_after"), LIFETIMES,
                         ids=[f"{lt.days}d" for lt, _ in LIFETIMES])
async def test_renewals_happen_inside_each_window_never_early_never_late(
        lifetime: timedelta, retry_after: float | None) -> None:
    w = ari_world(A, lifetime=lifetime, retry_after=retry_after)
    run = await simulate(w, span=lifetime * 3)
    # the window is the middle third: over three lifetimes, 4 (every 2/3) to 9 (every 1/3)
    assert 4 <= len(run.renewals) <= 9, [r.at for r in run.renewals]
    for r in run.renewals:
        assert r.window is not None, "renewed without the CA's window"
        start, end = r.window
        assert start <= r.at <= end, (r.at, r.window)  # not early (no loop), not late
        assert r.replaces == fake_cert_id(r.old), "the order names what it replaces"
    # the passes: one per poll and per renewal, not a spin
    polls = lifetime * 3 / min(poll_interval(retry_after) / (1 + POLL_JITTER), LOOP_INTERVAL)
    assert run.passes <= polls + 4 * len(run.renewals) + 10
    assert len(w.ari.requests) <= polls + len(run.renewals) + 2


@pytest.mark.parametrize(("lifetime", "retry_after"), LIFETIMES,
                         ids=[f"{lt.days}d" for lt, _ in LIFETIMES])
async def test_a_window_moved_into_the_past_renews_within_one_poll(
        lifetime: timedelta, retry_after: float | None) -> None:
    w = ari_world(A, lifetime=lifetime, retry_after=retry_after)
    await w.rec.converge()
    first = w.stored("a.test").info
    revoke_at = first.not_before + lifetime / 5  # well before its window opens
    run = await simulate(w, span=lifetime / 2, revoke_at=revoke_at)
    assert run.revoked_at == revoke_at
    renewal = run.renewals[0]
    assert renewal.old.fingerprint == first.fingerprint
    assert revoke_at < renewal.at <= revoke_at + poll_interval(retry_after), (
        renewal.at - revoke_at)
    assert renewal.replaces == fake_cert_id(first)
    assert len(run.renewals) == 1  # the new certificate is not renewed again for the old window


def late_window(info: CertInfo) -> tuple[datetime, datetime]:
    """A CA suggesting a window after the emergency point (less than a tenth left)."""
    life = info.not_after - info.not_before
    return info.not_after - life / 20, info.not_after - life / 50


@pytest.mark.parametrize("lifetime", [timedelta(days=6), timedelta(days=90)],
                         ids=["6d", "90d"])
async def test_the_emergency_rule_overrides_a_late_window(lifetime: timedelta) -> None:
    w = ari_world(A, lifetime=lifetime, window=late_window)
    run = await simulate(w, span=lifetime * 2)
    assert run.renewals
    for r in run.renewals:
        emergency = r.old.not_after - (r.old.not_after - r.old.not_before) / 10
        assert r.at == emergency


async def test_without_ari_the_lifetime_rule_applies_unchanged() -> None:
    w = ari_world(A, lifetime=timedelta(days=90))
    w.ari.offered = False
    run = await simulate(w, span=timedelta(days=200))
    assert run.renewals and w.ari.requests == []
    for r in run.renewals:
        assert r.at == r.old.not_after - timedelta(days=30)  # min(30 days, a third)
        assert r.replaces is None


def test_the_fake_windows_are_the_middle_third() -> None:
    w = ari_world(A)
    assert w.ari.window is middle_third
