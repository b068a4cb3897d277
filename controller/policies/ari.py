"""The ARI rules (RFC 9773), pure: whose renewal information is due, when to ask again, and which
renewal time to keep or choose inside the CA's suggested window.

Used by the ARI step (controller/ari.py), which asks the CA through ports.AriPoller, draws the
random numbers these functions take (randomness is I/O: none is drawn here) and records what
came back with CertStatus.with_ari; the renewal policy (policies/renewal.py) reads the chosen
time, and `diff` (render.py) shows it.

- The next poll is at the CA's Retry-After, clamped to [MIN_POLL, MAX_POLL] (1 min .. 24 h),
  DEFAULT_POLL (6 h) when it sends none, and up to POLL_JITTER (10 %) later, drawn per poll, so
  certificates first polled together drift apart instead of asking at the same instant forever.
  A failed poll asks again after 1 min, 2 min, 4 min ... up to DEFAULT_POLL (or a longer
  Retry-After); a certificate that has no ARI identifier (no authority key identifier) after
  MAX_POLL.
- The renewal time is drawn uniformly from the part of the window still ahead ([max(start,
  now), end]), once: a later window that still contains it keeps it; one that does not draws
  again; a window whose end is past means renew now (its end, which is past, is the time). It
  is never less than MIN_AGE (1 h) after the certificate began (its notBefore, or when it was
  stored if later: CAs backdate), so a CA suggesting a past window for every certificate
  renews each at most once an hour, not in a loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from controller.model import StoredCert
from controller.status import RENEWAL_SOURCE_ARI, AriState, CertStatus

DEFAULT_POLL = timedelta(hours=6)
MIN_POLL = timedelta(minutes=1)
MAX_POLL = timedelta(hours=24)
POLL_JITTER = 0.1
ERROR_BASE = timedelta(minutes=1)
MIN_AGE = timedelta(hours=1)  # no ARI-chosen renewal of a certificate younger than this


def clamp_poll(seconds: float) -> timedelta:
    """A Retry-After (seconds) as the delay honoured: within [MIN_POLL, MAX_POLL]."""
    if math.isnan(seconds):
        return MIN_POLL
    if seconds >= MAX_POLL.total_seconds():
        return MAX_POLL
    return max(MIN_POLL, timedelta(seconds=seconds))


def _jittered(base: timedelta, jitter: float) -> timedelta:
    """`base` made up to POLL_JITTER longer (`jitter` in [0, 1)), never beyond MAX_POLL."""
    return min(MAX_POLL, base * (1 + POLL_JITTER * min(max(jitter, 0.0), 1.0)))


def poll_delay(retry_after: float | None, *, jitter: float) -> timedelta:
    """After an answer: the CA's Retry-After (clamped), DEFAULT_POLL without one, jittered."""
    base = DEFAULT_POLL if retry_after is None else clamp_poll(retry_after)
    return _jittered(base, jitter)


def error_delay(errors: int, retry_after: float | None, *, jitter: float) -> timedelta:
    """After the `errors`-th failed poll in a row: 1 min doubling up to DEFAULT_POLL, or the
    CA's Retry-After when longer (clamped), jittered."""
    base = min(DEFAULT_POLL, ERROR_BASE * (1 << min(max(errors, 1) - 1, 20)))
    if retry_after is not None:
        base = max(base, clamp_poll(retry_after))
    return _jittered(base, jitter)


def choose_renewal(start: datetime, end: datetime, *, current: datetime | None, now: datetime,
                   draw: float, not_before: datetime | None = None) -> datetime:
    """The renewal time for the window [start, end]: `current` (the time chosen before for the
    same certificate) while the window contains it; else `draw` (uniform in [0, 1)) placed in
    the part of the window still ahead; the window's end when it is past (renew now). Never
    before MIN_AGE after `not_before` (when the certificate began: the ARI step gives the later
    of its notBefore and when this controller stored it): a CA that answers a past window for
    every certificate, the one just issued too, cannot make the controller order in a loop."""
    if end <= now:
        chosen = end
    elif current is not None and start <= current <= end:
        chosen = current
    else:
        low = max(start, now)
        chosen = low + (end - low) * min(max(draw, 0.0), 1.0)
    return chosen if not_before is None else max(chosen, not_before + MIN_AGE)


def ari_state(status: CertStatus | None, fingerprint: str) -> AriState | None:
    """The ARI state recorded for the stored certificate `fingerprint` (None: none, or one of
    another certificate)."""
    if status is None or status.ari is None or status.ari.fingerprint != fingerprint:
        return None
    return status.ari


def chosen_for(status: CertStatus | None, fingerprint: str) -> datetime | None:
    """The renewal time chosen inside an ARI window for the certificate `fingerprint`."""
    if (status is None or status.renewal_at is None or status.renewal_source != RENEWAL_SOURCE_ARI
            or status.renewal_for != fingerprint):
        return None
    return status.renewal_at


def next_poll(status: CertStatus | None, stored: StoredCert) -> datetime | None:
    """When the stored certificate's renewal information is due (None: never asked: now)."""
    state = ari_state(status, stored.info.fingerprint)
    return None if state is None else state.next_poll


def pollable(stored: StoredCert, now: datetime) -> bool:
    """A certificate we may ask about: usable and not expired (RFC 9773 §4.3: never after
    expiry)."""
    return stored.key_matches and now < stored.info.not_after


def due_polls(candidates: Mapping[str, StoredCert], statuses: Mapping[str, CertStatus],
              now: datetime) -> list[str]:
    """The candidates whose poll is due at `now`, most overdue first (never asked: first of
    all), then by name."""
    due: list[tuple[float, str]] = []
    for domain, stored in candidates.items():
        if not pollable(stored, now):
            continue
        at = next_poll(statuses.get(domain), stored)
        if at is None:
            due.append((-math.inf, domain))
        elif at <= now:
            due.append((at.timestamp(), domain))
    return [d for _, d in sorted(due)]


def earliest_poll(candidates: Mapping[str, StoredCert], statuses: Mapping[str, CertStatus],
                  now: datetime) -> datetime | None:
    """The earliest next poll among the candidates (`now` for one never asked); None: none."""
    times: Iterable[datetime] = (
        next_poll(statuses.get(d), s) or now for d, s in candidates.items() if pollable(s, now))
    return min(times, default=None)
