"""The ARI step: asks the CA for the renewal window of every stored certificate whose poll is due,
before each executing pass plans (RFC 9773).

Called by reconcile.py (`Reconciler.compute(poll=True)`: `reconcile` and `run`; never by
`diff`, which only shows what the status files hold). `refresh()` picks the desired,
usable, unexpired certificates whose poll is due (policies/ari.py), reads their PEMs through
the CertStore, asks the ports.AriPoller (one unauthenticated GET each, at most `concurrency`
at once, at the CA that issued the certificate: status.issuer_ca, [acme]'s when none is
recorded) and returns the changed statuses, which the reconciler keeps and saves. It draws the
random numbers the pure rules take: the renewal time inside a new window and each next
poll's jitter.

Never a burst: a token bucket bounds the polls. It refills at twice the rate that polls every
certificate once per DEFAULT_POLL (6 h), at least one per minute, and holds what that rate
gives in two MIN_WAKE_GAPs (at least BURST): 10,000 certificates are polled at about 0.9/s
with at most ~110 in one pass, the first round over about three hours. `next_wake()` tells
the loop when the next poll is due (never sooner than MIN_WAKE_GAP after the last refresh
that polled, so 10,000 certificates cost one pass a minute, not one a second).

A directory without `renewalInfo` turns the step off for the process (the lifetime rule
applies, unchanged); a directory that cannot be read is retried after 1 min, 2 min, ... 1 h.
A certificate whose renewal is backing off is not asked about (its renewal is wanted already,
and a `reconcile` re-run during a CA's Retry-After sends the CA nothing).
An answer for a certificate that is no longer the stored one is dropped, and a poll's state
is tied to the certificate's fingerprint (CertStatus.with_ari), so a window fetched for the
previous certificate never schedules the new one. An explanationURL is logged with its window.
A chosen time is never less than an hour after the certificate began (policies/ari.py
MIN_AGE; when this controller stored it, if later than its notBefore): no renewal loop even
when a CA answers a past window for every certificate.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.errors import ControllerError
from controller.logs import log_event
from controller.model import Desired, Observed, StoredCert
from controller.policies.ari import (
    DEFAULT_POLL,
    MAX_POLL,
    ari_state,
    choose_renewal,
    chosen_for,
    due_polls,
    earliest_poll,
    error_delay,
    poll_delay,
)
from controller.ports import AriAnswer, AriPoller, AriPollerFactory, CertStore, Clock
from controller.status import AriState, CertStatus, in_backoff
from controller.threads import off_loop

BURST = 20
MIN_RATE = 1 / 60  # polls per second, whatever the number of certificates
MIN_WAKE_GAP = timedelta(minutes=1)
UNAVAILABLE_BASE = timedelta(minutes=1)
UNAVAILABLE_CAP = timedelta(hours=1)
MAX_ERROR = 300  # characters of a poll's error kept in the status

AriRequestObserver = Callable[[str], None]  # "ok" | "error", per renewalInfo request


@dataclass
class AriStep:
    """See the module docstring. One per reconciler; `rng` may be seeded by tests."""

    poller: AriPollerFactory
    store: CertStore
    clock: Clock
    concurrency: int = 8
    on_request: AriRequestObserver | None = None
    rng: random.Random = field(default_factory=random.Random)
    _tokens: float | None = None
    _refilled_at: datetime | None = None
    _last_polled: datetime | None = None
    _supported: bool | None = None
    _unavailable: int = 0
    _unavailable_until: datetime | None = None
    _next_wake: datetime | None = None

    # -- the bucket ------------------------------------------------------------------------

    @staticmethod
    def rate(certificates: int) -> float:
        """Polls per second allowed for this many certificates."""
        return max(MIN_RATE, 2 * certificates / DEFAULT_POLL.total_seconds())

    @classmethod
    def capacity(cls, certificates: int) -> float:
        """The most polls one pass may make."""
        return max(float(BURST), cls.rate(certificates) * 2 * MIN_WAKE_GAP.total_seconds())

    def _refill(self, now: datetime, certificates: int) -> float:
        cap = self.capacity(certificates)
        if self._tokens is None or self._refilled_at is None:
            self._tokens = cap
        else:
            elapsed = max(0.0, (now - self._refilled_at).total_seconds())
            self._tokens = min(cap, self._tokens + elapsed * self.rate(certificates))
        self._refilled_at = now
        return self._tokens

    # -- the step ----------------------------------------------------------------------------

    def next_wake(self) -> datetime | None:
        """When the next poll is due, as of the last refresh (None: nothing to poll)."""
        return self._next_wake

    async def refresh(self, desired: Desired, observed: Observed,
                      statuses: Mapping[str, CertStatus]) -> dict[str, CertStatus]:
        """Poll what is due; the statuses that changed (the caller keeps and saves them)."""
        now = self.clock()
        if self._supported is False:
            self._next_wake = None
            return {}
        if self._unavailable_until is not None and now < self._unavailable_until:
            self._next_wake = self._unavailable_until
            return {}
        candidates = {d: observed.stored[d] for d in desired.specs
                      if d in observed.stored and not in_backoff(statuses.get(d), now)}
        due = due_polls(candidates, statuses, now)
        tokens = self._refill(now, len(candidates))
        take = due[: int(tokens)]
        changed: dict[str, CertStatus] = {}
        if take:
            poller = await self._poller(now)
            if poller is None:
                return {}
            changed = await self._poll(poller, take, candidates, statuses, now)
            self._tokens = max(0.0, tokens - len(take))
            self._last_polled = now
        self._next_wake = self._wake(candidates, {**statuses, **changed}, now,
                                     backlog=len(due) > len(take))
        return changed

    async def _poller(self, now: datetime) -> AriPoller | None:
        """The poller when the CA offers ARI; None (and a retry scheduled) when it cannot be
        asked now, or never (no renewalInfo: the step stays off for this process)."""
        try:
            poller = await self.poller()
            supported = await poller.supported()
        except ControllerError as exc:
            self._unavailable += 1
            delay = min(UNAVAILABLE_CAP, UNAVAILABLE_BASE * (1 << min(self._unavailable - 1, 10)))
            self._unavailable_until = self._next_wake = now + delay
            log_event("ARI not checked: the CA's directory cannot be read", level=logging.INFO,
                      error=str(exc), retry_at=self._unavailable_until.isoformat())
            return None
        self._unavailable, self._unavailable_until = 0, None
        if not supported:
            self._supported = False
            self._next_wake = None
            log_event("the CA offers no renewal information (ARI): renewal times follow the "
                      "lifetime rule")
            return None
        self._supported = True
        return poller

    def _wake(self, candidates: Mapping[str, StoredCert], statuses: Mapping[str, CertStatus],
              now: datetime, *, backlog: bool) -> datetime | None:
        earliest = earliest_poll(candidates, statuses, now)
        if earliest is None:
            return None
        if backlog or earliest <= now:  # due, but the bucket is empty: when a poll is possible
            rate = self.rate(len(candidates))
            missing = max(0.0, 1.0 - (self._tokens or 0.0))
            earliest = now + timedelta(seconds=missing / rate)
        if self._last_polled is not None:
            earliest = max(earliest, self._last_polled + MIN_WAKE_GAP)
        return earliest

    async def _poll(self, poller: AriPoller, domains: list[str],
                    candidates: Mapping[str, StoredCert], statuses: Mapping[str, CertStatus],
                    now: datetime) -> dict[str, CertStatus]:
        pems = await off_loop(_read_pems, self.store, domains)
        sem = asyncio.Semaphore(self.concurrency)

        async def ask(domain: str, pem: bytes) -> AriAnswer | None:
            st = statuses.get(domain)
            async with sem:
                try:  # at the CA that issued it ([acme]'s when not recorded)
                    return await poller.renewal_info(pem, ca=st.issuer_ca if st else None)
                except ControllerError as exc:  # the port never raises; a stop may
                    log_event("ARI poll not made", level=logging.DEBUG, error=str(exc))
                    return None

        asked = [d for d in domains if pems.get(d)]
        answers = await asyncio.gather(*(ask(d, pems[d]) for d in asked))
        out: dict[str, CertStatus] = {}
        for domain, answer in zip(asked, answers, strict=True):
            stored = candidates[domain]
            if answer is None:
                continue
            if answer.cert_id and self.on_request is not None:
                self.on_request("error" if answer.error else "ok")
            if answer.fingerprint != stored.info.fingerprint:
                continue  # the store changed under the poll: this answer is of another cert
            cur = statuses.get(domain) or CertStatus(domain=domain)
            new = self._recorded(domain, cur, stored, answer, now)
            if new != cur:
                out[domain] = new
        return out

    def _recorded(self, domain: str, cur: CertStatus, stored: StoredCert, answer: AriAnswer,
                  now: datetime) -> CertStatus:
        """`cur` with `answer` recorded (CertStatus.with_ari)."""
        fp = stored.info.fingerprint
        before = ari_state(cur, fp)
        jitter = self.rng.random()
        if not answer.cert_id:  # no ARI identifier: this certificate cannot be asked about
            state = AriState(fingerprint=fp, cert_id="", next_poll=now + MAX_POLL,
                             polled_at=now, errors=1, last_error=answer.error)
            return cur.with_ari(state, renewal_at=None)
        if answer.error is not None or answer.window_start is None or answer.window_end is None:
            errors = (before.errors if before is not None else 0) + 1
            error = (answer.error or "no suggested window")[:MAX_ERROR]
            kept = before if before is not None and before.has_window else None
            state = AriState(
                fingerprint=fp, cert_id=answer.cert_id,
                next_poll=now + error_delay(errors, answer.retry_after, jitter=jitter),
                window_start=kept.window_start if kept else None,
                window_end=kept.window_end if kept else None,
                explanation_url=kept.explanation_url if kept else None,
                polled_at=now, errors=errors, last_error=error)
            # a warning for the first failure in a row; the repeats (every 6 h at most) are info
            log_event("ARI renewal information not fetched",
                      level=logging.WARNING if errors == 1 else logging.INFO, domain=domain,
                      error=error, failures=errors, next_poll=state.next_poll.isoformat())
            return cur.with_ari(state, renewal_at=None)
        start, end = answer.window_start, answer.window_end
        at = choose_renewal(start, end, current=chosen_for(cur, fp), now=now,
                            draw=self.rng.random(), not_before=_born(stored, cur))
        state = AriState(fingerprint=fp, cert_id=answer.cert_id,
                         next_poll=now + poll_delay(answer.retry_after, jitter=jitter),
                         window_start=start, window_end=end,
                         explanation_url=answer.explanation_url, polled_at=now)
        moved = before is None or (before.window_start, before.window_end,
                                   before.explanation_url) != (start, end, answer.explanation_url)
        if moved:
            extra = {"explanation_url": answer.explanation_url} if answer.explanation_url else {}
            log_event("ARI renewal window", level=logging.INFO if end > now else logging.WARNING,
                      domain=domain, start=start.isoformat(), end=end.isoformat(),
                      renew_at=at.isoformat(), renew_now=end <= now, **extra)
        return cur.with_ari(state, renewal_at=at)


def _born(stored: StoredCert, status: CertStatus) -> datetime:
    """When the stored certificate began: its notBefore, or when this controller stored it if
    later (CAs backdate notBefore, Let's Encrypt by an hour)."""
    nb = stored.info.not_before
    return max(nb, status.issued_at) if status.issued_at is not None else nb


def _read_pems(store: CertStore, domains: list[str]) -> dict[str, bytes]:
    """The stored certificate PEMs (leaf + chain) of `domains`; one that cannot be read is
    left out (the next scan reports it)."""
    out: dict[str, bytes] = {}
    for domain in domains:
        try:
            pem = store.cert_pem(domain)
        except ControllerError:
            continue
        if pem:
            out[domain] = pem
    return out


__all__ = ["BURST", "MIN_WAKE_GAP", "AriRequestObserver", "AriStep"]
