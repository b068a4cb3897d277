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


class PermanentError(ControllerError):
    """Retrying the same request will fail the same way (rejected identifier, unauthorized).

    Still retried across passes, but only after the per-certificate backoff.
    """


class StoreError(ControllerError):
    """The certificate store could not be read or written (disk full, read-only, corrupt)."""
