"""Runs planned actions and returns one Outcome per action; never raises for an action's error.

Called by reconcile.py with the actions of one pass. Each action re-checks its precondition
right before acting (the stored fingerprint it expects, or the unusable files it saw: those are
quarantined right before the new order), issue/renew go ACME → store swap → apply → verify (a
renewal the plan marks `reuse_key` orders with the stored key, read right before ordering), and
every apply is proved by a real TLS handshake (apply.py: NJet's code 0 — or 11, "repeated" —
proves nothing); a new pair not valid yet is stored but not applied (the plan waits for its
notBefore). A dual block's two certificates are two actions (store keys `<name>` and
`<name>@<slot>`, Action.domain), each pushed to the same NJet block with the cert_type of its
own key (NJet serves both: njet-contract §3.3) and verified by a handshake offering only that
key type; SNI and targets come from the spec. An issuer of several CAs ([acme]'s and the
[[acme.fallback]] ones: ports.CaChoices) is ordered from the CA policies/fallback.py picks from
the certificate's failure streaks, and an order that fails there goes on at the next CA within
the same attempt when that says so (ca_fallback.py); the outcome names the CA that issued (or
the streaks left). Errors become outcomes: temporary (retry after a delay) or permanent; the
per-certificate backoff lives in status (fold.py). An optional `progress` (ports.ActionProgress,
the CLI's `reconcile` provides one) is told as each action finishes. Every order is recorded in
the rate-limit ledger of the CA it went to (ports.RateLedger, when one is given for it): placed
or not, its failed validations, a rateLimited answer's Retry-After. In fleet mode an
issue/renew runs under the order gate (ports.OrderGate: the certificate's lease, fenced
writes); an action another node does (HandledElsewhere) is a skipped outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import ParamSpec, TypeVar

from controller.apply import Applier, is_trap
from controller.ca_fallback import CaOrderFailed, order_across_cas
from controller.certinfo import key_type_of_key
from controller.errors import (
    ConfigError,
    ControllerError,
    Fenced,
    HandledElsewhere,
    PermanentError,
    RateLimited,
    StoreError,
    StoreUnavailable,
    TemporaryError,
    ValidationFailed,
    order_placed,
)
from controller.faultpoints import fault_point, register
from controller.fold import Outcome
from controller.logs import log_event
from controller.model import IssuedCert
from controller.plan import Action, ActionKind
from controller.policies.ratelimits import BudgetScope, host_of, order_events
from controller.ports import (
    ActionProgress,
    CaChoices,
    CertStore,
    Clock,
    Issuer,
    IssuerFactory,
    NjetWriter,
    OrderGate,
    Prober,
    RateLedger,
    RegisteredDomain,
)

register("execute.after_order", "execute.after_store")  # apply.py registers after_apply/_verify

P = ParamSpec("P")
T = TypeVar("T")
AcmeObserver = Callable[[str, float], None]  # (outcome "ok"|"temporary"|"permanent", seconds)


@dataclass
class Executor:
    """Runs one pass's actions, at most `concurrency` at once.

    `njet` None is store-only mode (issue into the store, never apply). `repeated_error` is the
    NjetWriter's "repeated" (code 11) error class. `clock` is the reconciler's clock (the one
    "now"); `sleep` waits between apply attempts and verify handshakes (tests pass a no-op).
    """

    store: CertStore
    issuer_factory: IssuerFactory
    njet: NjetWriter | None = None
    prober: Prober | None = None
    probe_timeout: float = 5.0
    concurrency: int = 8
    repeated_error: type[BaseException] | None = None
    on_acme: AcmeObserver | None = None
    revoke_on_delete: bool = False
    progress: ActionProgress | None = None  # told as each action finishes (the CLI's bar)
    # the rate-limit ledger every issue attempt is recorded in, for `budget_scope`'s CA and
    # account, names grouped by `registered_domain` (None: nothing is recorded)
    ledger: RateLedger | None = None
    budget_scope: BudgetScope | None = None
    # the [[acme.fallback]] CAs' ledgers with their scopes: an order at one is recorded there
    fallback_budgets: tuple[tuple[BudgetScope, RateLedger], ...] = ()
    registered_domain: RegisteredDomain | None = None
    # fleet mode: one node orders a certificate at a time (ports.OrderGate); None: one node
    gate: OrderGate | None = None
    clock: Clock = field(kw_only=True)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, kw_only=True)

    async def execute(self, actions: Sequence[Action]) -> list[Outcome]:
        sem = asyncio.Semaphore(self.concurrency)
        progress = self.progress

        async def guarded(a: Action) -> Outcome:
            async with sem:
                outcome = await self._run(a)
            if progress is not None:
                progress.finished(outcome)
            return outcome

        if progress is None:
            return list(await asyncio.gather(*(guarded(a) for a in actions)))
        progress.started(len(actions))
        try:
            return list(await asyncio.gather(*(guarded(a) for a in actions)))
        finally:
            progress.ended()

    async def _run(self, action: Action) -> Outcome:
        started = time.monotonic()
        try:
            if action.kind in (ActionKind.ISSUE, ActionKind.RENEW):
                outcome = await self._issue(action)
            elif action.kind is ActionKind.APPLY:
                outcome = await self._apply_stored(action)
            else:
                outcome = await self._delete(action)
        except (HandledElsewhere, StoreUnavailable, Fenced) as exc:  # fleet mode: another
            # node does it, the fleet database is away (retried by the next pass, no backoff),
            # or this node lost the lease while ordering (the next pass applies the fleet's)
            outcome = Outcome(action, ok=False, skipped=True, error=str(exc))
        except TemporaryError as exc:
            outcome = Outcome(action, ok=False, error=str(exc), retry_after=exc.retry_after)
        except (PermanentError, ConfigError) as exc:
            outcome = Outcome(action, ok=False, error=str(exc))
        except ControllerError as exc:
            outcome = Outcome(action, ok=False, error=str(exc))
        except Exception as exc:  # an action must never take the loop down
            outcome = Outcome(action, ok=False, error=f"unexpected {type(exc).__name__}: {exc}")
            log_event("unexpected error", level=logging.ERROR, domain=action.domain,
                      error=repr(exc))
        log_event(
            f"{action.kind} {'done' if outcome.ok else 'skipped' if outcome.skipped else 'failed'}",
            level=logging.INFO if outcome.ok or outcome.skipped else logging.WARNING,
            domain=action.domain,
            reason=action.reason.value,
            seconds=round(time.monotonic() - started, 3),
            **({"error": outcome.error} if outcome.error else {}),
        )
        return outcome

    # -- issue / renew ---------------------------------------------------------------------

    async def _issue(self, action: Action) -> Outcome:
        if self.gate is None:
            return await self._issue_here(action)
        # fleet mode: under the certificate's lease, re-checked against the shared store
        async with self.gate.order(action.domain, expected=action.expected_fingerprint):
            return await self._issue_here(action)

    async def _issue_here(self, action: Action) -> Outcome:
        assert action.spec is not None and action.key_type is not None
        current = self._current(action.domain)
        if not current.as_planned(action):
            return Outcome(action, ok=False, skipped=True,
                           error="store changed since the plan was made")
        issuer = await self.issuer_factory()
        if current.unusable is not None:
            # kept for the operator, and out of the way of the new pair: one order, not a loop
            where = await store_write(self.store.quarantine, action.domain)
            log_event("unusable pair quarantined before a new order", level=logging.WARNING,
                      domain=action.domain, moved_to=where, problem=current.unusable)
        key_pem = self._key_to_reuse(action)
        try:
            issued, issuer_ca = await self._order(issuer, action, key_pem)
        except CaOrderFailed as failed:
            return failed.outcome(action)
        fault_point("execute.after_order")
        stored = await store_write(self.store.put, action.domain, issued)
        fault_point("execute.after_store")
        fp = stored.info.fingerprint
        made = Outcome(action, ok=True, stored_fingerprint=fp, ordered_profile=issued.profile,
                       ca_profile=issued.ca_profile, issuer_ca=issuer_ca)
        if not action.targets or self.njet is None:
            return made
        if stored.info.not_before > self.clock():
            # not servable yet: the next plan waits until notBefore (NotYetValid), then applies
            log_event("new certificate not applied yet: it is not valid before its notBefore",
                      domain=action.domain, not_before=stored.info.not_before.isoformat())
            return made
        try:
            served = await self._applier().apply_all(
                action.targets, action.spec.names[0], action.key_type, issued.cert_pem,
                issued.key_pem, fp)
        except ControllerError as exc:
            if action.kind is ActionKind.ISSUE:
                where = await store_write(self.store.quarantine, action.domain)
                log_event("first issuance could not be applied: pair quarantined",
                          level=logging.WARNING, domain=action.domain, moved_to=where)
            return replace(made, ok=False, error=f"issued but not applied: {exc}",
                           needs_new_key=is_trap(exc))
        return replace(made, served_fingerprint=served)
    async def _order(
        self, issuer: Issuer, action: Action, key_pem: bytes | None
    ) -> tuple[IssuedCert, str | None]:
        """The new pair and the directory URL of the CA that issued it (None: a plain Issuer).
        An issuer of several CAs (ports.CaChoices) is ordered from as ca_fallback.py says
        (policies/fallback.py decides); `replaces` goes only to the CA that issued the old
        certificate (Action.replaces_ca, [acme]'s when unknown). When no CA issued,
        CaOrderFailed carries every CA's error and the streaks."""
        if not isinstance(issuer, CaChoices):
            return await self._order_from(issuer, action, key_pem), None

        home = action.replaces_ca if action.replaces_ca in issuer.cas else issuer.cas[0]

        async def order_at(one: Issuer, ca: str) -> IssuedCert:
            # `replaces` names a certificate of the CA that issued it: never sent elsewhere
            sent = action if ca == home else replace(action, replaces=None)
            return await self._order_from(one, sent, key_pem, ca=ca)

        return await order_across_cas(issuer, action, order_at)

    async def _order_from(
        self, issuer: Issuer, action: Action, key_pem: bytes | None, *, ca: str | None = None
    ) -> IssuedCert:
        """One order at one CA (`ca`: its directory URL; None: the plain Issuer's), recorded
        in the rate-limit ledger when it is the ledger's CA."""
        assert action.spec is not None and action.key_type is not None
        t0 = time.monotonic()
        try:
            issued = await issuer.issue(action.spec, action.key_type, key_pem=key_pem,
                                        replaces=action.replaces)
        except TemporaryError as exc:
            self._acme("temporary", t0)
            await self._record(action, exc, ca)
            raise
        except (PermanentError, ConfigError) as exc:
            self._acme("permanent", t0)
            await self._record(action, exc, ca)
            raise
        self._acme("ok", t0)
        await self._record(action, None, ca)
        return issued

    def _key_to_reuse(self, action: Action) -> bytes | None:
        """The stored key, when the plan says this renewal keeps it (reuseKey) and it is of the
        key type ordered; else None (a fresh key). Read right before ordering; never logged."""
        if not action.reuse_key or action.kind is not ActionKind.RENEW:
            return None
        key_pem = self.store.key_pem(action.domain)
        try:
            usable = key_pem is not None and key_type_of_key(key_pem) is action.key_type
        except ValueError:  # unreadable: the message never quotes the key
            usable = False
        if not usable:
            log_event("the stored key cannot be reused: renewing with a new key",
                      level=logging.WARNING, domain=action.domain)
            return None
        return key_pem

    def _current(self, domain: str) -> _Current:
        """What the store holds for `domain` right now (a pair that cannot be parsed makes
        `get` raise; one whose key does not match comes back with key_matches False)."""
        try:
            got = self.store.get(domain)
        except StoreError as exc:
            return _Current(None, str(exc))
        if got is None:
            return _Current(None, None)
        if not got.key_matches:
            return _Current(None, f"the key of {domain} does not match its certificate")
        return _Current(got.info.fingerprint, None)

    async def _record(self, action: Action, exc: BaseException | None, ca: str | None) -> None:
        """What one issue attempt at `ca` leaves in the rate-limit ledger (ratelimits.
        order_events): the order if the CA accepted it, the hosts whose validation failed, a
        rateLimited answer's Retry-After. Each CA's in its own ledger (`ledger` for [acme]'s
        and a plain Issuer's, `fallback_budgets` for the others; a CA with none is not
        recorded); a ledger that cannot be written is logged, never fails the action."""
        ledger, scope = self.ledger, self.budget_scope
        if ca is not None and (scope is None or ca != scope.ca):
            ledger, scope = next(((lg, sc) for sc, lg in self.fallback_budgets if sc.ca == ca),
                                 (None, None))
        if ledger is None or scope is None or action.spec is None:
            return
        names = action.spec.names
        domain_of = self.registered_domain or (lambda name: name)
        events = order_events(
            scope, names, {domain_of(host_of(n)) for n in names}, at=self.clock(),
            placed=exc is None or order_placed(exc), issued=exc is None,
            failed_hosts=exc.hosts if isinstance(exc, ValidationFailed) else (),
            rate_limited_for=exc.retry_after if isinstance(exc, RateLimited) else None)
        for event in events:
            try:
                await store_write(ledger.record, event)
            except ControllerError as err:
                log_event("rate-limit ledger not written", level=logging.WARNING,
                          domain=action.domain, error=str(err))

    def _acme(self, outcome: str, t0: float) -> None:
        if self.on_acme is not None:
            self.on_acme(outcome, time.monotonic() - t0)

    # -- apply -----------------------------------------------------------------------------

    async def _apply_stored(self, action: Action) -> Outcome:
        assert action.spec is not None and action.key_type is not None
        stored = self.store.get(action.domain)
        if stored is None or stored.info.fingerprint != action.expected_fingerprint:
            return Outcome(action, ok=False, skipped=True,
                           error="store changed since the plan was made")
        if not action.targets or self.njet is None:
            return Outcome(action, ok=False, error="no NJet target to apply to")
        cert_pem = self.store.cert_pem(action.domain)
        key_pem = self.store.key_pem(action.domain)
        if cert_pem is None or key_pem is None:
            return Outcome(action, ok=False, skipped=True, error="pair vanished from the store")
        key_type = stored.info.key_type or action.key_type
        try:
            served = await self._applier().apply_all(
                action.targets, action.spec.names[0], key_type, cert_pem, key_pem,
                stored.info.fingerprint)
        except ControllerError as exc:
            return Outcome(action, ok=False, error=str(exc), needs_new_key=is_trap(exc),
                           retry_after=getattr(exc, "retry_after", None))
        return Outcome(action, ok=True, served_fingerprint=served)

    def _applier(self) -> Applier:
        """What applies a pair to every block of its certificate (apply.py: one after the
        other, each verified), over this executor's NJet, prober, timeout and sleep."""
        assert self.njet is not None
        return Applier(self.njet, self.prober, self.probe_timeout, self.repeated_error,
                       self.sleep)

    # -- delete ----------------------------------------------------------------------------

    async def _delete(self, action: Action) -> Outcome:
        stored = self.store.get(action.domain)
        if stored is None:
            return Outcome(action, ok=True)
        if stored.info.fingerprint != action.expected_fingerprint:
            return Outcome(action, ok=False, skipped=True,
                           error="store changed since the plan was made")
        if self.revoke_on_delete and stored.info.not_after > self.clock():
            cert_pem = self.store.cert_pem(action.domain)
            if cert_pem is not None:
                # revoke first: if the CA is unreachable the files stay until it succeeds
                issuer = await self.issuer_factory()
                await issuer.revoke(cert_pem)
                log_event("certificate revoked", domain=action.domain,
                          serial=stored.info.serial)
        # never unlinked: moved to quarantine/, kept quarantineRetention (adapters/store/
        # quarantine.py expires and restores them)
        where = await store_write(self.store.quarantine, action.domain)
        log_event("certificate moved to quarantine", domain=action.domain, moved_to=where)
        return Outcome(action, ok=True)


async def store_write(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A store write in a worker thread that a cancellation (service.py cancels the pass on
    SIGTERM) cannot leave running behind a released store lock: the cancelled caller waits for
    it to finish, then the cancellation goes on."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise


@dataclass(frozen=True)
class _Current:
    """The store's pair for a domain right before acting: the fingerprint of a usable one, or
    why the files there cannot be used (both None: nothing stored)."""

    fingerprint: str | None
    unusable: str | None

    def as_planned(self, action: Action) -> bool:
        """The precondition of an issue/renew: the store still holds what the plan saw. A plan
        that saw unusable files holds while nothing usable is there (broken or gone)."""
        if action.expected_unusable:
            return self.fingerprint is None
        return self.unusable is None and self.fingerprint == action.expected_fingerprint
