"""One error tree for the whole controller.

Adapters raise these; `execute` turns them into outcomes (temporary with a delay, or permanent);
entry points turn `ConfigError` into a clear message and exit code 1.
"""

from __future__ import annotations


class ControllerError(Exception):
    """Base class of every error the controller raises on purpose."""


class ConfigError(ControllerError):
    """Bad input from the user: the TOML, njet.conf, a domain name. Never retried."""


class TemporaryError(ControllerError):
    """Worth retrying later: a CA or NJet that is down, a 5xx, a rate limit.

    `retry_after` (seconds) is a hint from the other side (e.g. Retry-After), or None.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CaUnreachableError(TemporaryError):
    """A CA whose directory cannot be reached at all (connection refused, DNS or TLS failure,
    connect timeout): with `[[acme.fallback]]` CAs the next one is tried in the same pass."""


class PermanentError(ControllerError):
    """Retrying the same request will fail the same way (rejected identifier, unauthorized).

    Still retried across passes, but only after the per-certificate backoff.
    """


class StoreError(ControllerError):
    """The certificate store could not be read or written (disk full, read-only, corrupt)."""


class HandledElsewhere(ControllerError):
    """Fleet mode: another node does this action (it holds the certificate's lease, or it
    already stored a newer certificate), or this node must not order (its [acme] settings
    differ from the fleet's). The executor reports it as a skipped action, with no backoff."""


class Fenced(StoreError):
    """Fleet mode: a store write refused because this node lost the certificate's lease (it
    was paused or cut off past it) and another node may have stored a newer certificate. The
    new pair is discarded; the executor reports a skipped action (no backoff), and the next
    pass applies what the fleet stored."""


class StoreUnavailable(TemporaryError):
    """Fleet mode: the fleet database cannot be reached right now (down, restarting, cut
    off). An action that meets it is skipped, not backed off: the next pass (woken when the
    database answers again) retries it."""


class RateLimited(TemporaryError):
    """The CA answered rateLimited (HTTP 429); `retry_after` says for how long, when it did.
    The rate-limit ledger records it (policies/ratelimits.py)."""


class ValidationFailed(PermanentError):
    """The CA found a challenge answer wrong: the authorization of each of `hosts` went
    invalid. The rate-limit ledger counts them (failedValidationsPerHostPerHour)."""

    def __init__(self, message: str, *, hosts: tuple[str, ...]) -> None:
        super().__init__(message)
        self.hosts = hosts


_ORDER_PLACED = "order_placed"


def mark_order_placed(exc: BaseException) -> None:
    """The ACME issuer marks an error raised after the CA accepted the new order, so the
    rate-limit ledger counts that order (newOrdersPer3h) although no certificate came of it."""
    setattr(exc, _ORDER_PLACED, True)


def order_placed(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from (`raise ... from`), was marked by
    `mark_order_placed`."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, _ORDER_PLACED, False) is True:
            return True
        seen = seen.__cause__
    return False
