"""One order from an issuer of several CAs ([acme]'s and the [[acme.fallback]] ones:
ports.CaChoices), going on at the next CA when the CA it was sent to fails.

Used by execute.py (Executor._order), which hands in how one order at one CA is made (timed for
the ACME metrics, recorded in the rate-limit ledger). policies/fallback.py decides: the CA to
start at from the action's failure streaks, and whether a failure goes on at the next CA
within this attempt (logged); when it does not, CaOrderFailed carries every CA's error and the
consecutive failures per CA, which its outcome puts into the status (fold.py). A step: the CAs
are reached only through the ports.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from controller.errors import ConfigError, ControllerError, PermanentError, TemporaryError
from controller.fold import Outcome
from controller.logs import log_event
from controller.model import IssuedCert
from controller.plan import Action
from controller.policies.fallback import after_failure, choose_ca, failure_of, next_ca
from controller.ports import CaChoices, Issuer
from controller.status import CaStreak

OrderAt = Callable[[Issuer, str], Awaitable[IssuedCert]]  # (the CA's Issuer, its directory URL)


async def order_across_cas(
    issuer: CaChoices, action: Action, order_at: OrderAt
) -> tuple[IssuedCert, str]:
    """The new pair and the directory URL of the CA that issued it, ordered with `order_at`
    from the CAs of `issuer` as policies/fallback.py says; CaOrderFailed when no CA issued."""
    cas, after = issuer.cas, issuer.fallback_after
    failures = {s.ca: s.failures for s in action.ca_failures}
    tried: list[int] = []
    errors: list[str] = []
    index = choose_ca(cas, failures, after)
    while index is not None:
        tried.append(index)
        try:
            one = await issuer.for_ca(index)
            return await order_at(one, cas[index]), cas[index]
        except (TemporaryError, PermanentError, ConfigError) as exc:
            failure = failure_of(exc)
            failures = after_failure(failures, cas[index], failure, after)
            errors.append(str(exc))
            index = next_ca(cas, failures, after, tried=tried, failure=failure)
            if index is None:
                raise CaOrderFailed(exc, "; then ".join(errors), failures) from exc
            log_event("the CA keeps failing: ordering from the next CA",
                      level=logging.WARNING, domain=action.domain, ca=cas[tried[-1]],
                      failure=failure.value, failures=failures[cas[tried[-1]]],
                      next_ca=cas[index])
    raise AssertionError("an issuer with no CA")  # pragma: no cover


class CaOrderFailed(Exception):
    """An order failed at every CA it was sent to (never leaves execute.py's Executor._issue):
    `message` says what each CA answered, `error` is the last one's error, `failures` the
    consecutive failures per CA directory URL (into the status: fold.py)."""

    def __init__(self, error: ControllerError, message: str, failures: dict[str, int]) -> None:
        super().__init__(message)
        self.error = error
        self.failures = failures

    def outcome(self, action: Action) -> Outcome:
        streaks = tuple(CaStreak(ca, n) for ca, n in sorted(self.failures.items()) if n > 0)
        return Outcome(action, ok=False, error=str(self), ca_failures=streaks,
                       retry_after=getattr(self.error, "retry_after", None))
