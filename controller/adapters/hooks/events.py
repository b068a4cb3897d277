"""Certificate events from a pass's outcomes, and how hooks and webhooks are told about them.

`events_from_pass` (called by observer.py on the event loop, no I/O) turns outcomes into
CertEvents: an issue that succeeded is "issued", a renew "renewed", a delete "deleted"; an
issue, renew or apply that failed is "failed"; skipped outcomes and other kinds are no event.
An event that follows a new pair (issued, renewed, or failed after a new pair was stored) is
completed from the store by the dispatcher (`needs_lookup`); the others carry what the pass
observed before acting (a deleted pair's serial and expiry).

`hook_env` is a hook's whole environment (nothing else is inherited): the NJCM_* variables
and HOOK_PATH. Paths only, never key material. `event_json` and `event_text` are what the
webhook templates (webhook.py) are built from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from controller.errors import ConfigError
from controller.fold import Outcome
from controller.model import ActionKind, Observed, StoredCert
from controller.paths import StorePaths

HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH a hook runs with (NJet starts copilots with an empty environment)."""

ENV_NAMES = ("NJCM_EVENT", "NJCM_DOMAIN", "NJCM_NAMES", "NJCM_CERT_PATH", "NJCM_KEY_PATH",
             "NJCM_SERIAL", "NJCM_NOT_AFTER", "NJCM_ERROR", "PATH")
"""Every variable of a hook's environment, always all of them ("" when not known)."""

MAX_ERROR = 1000  # characters of an error handed to a hook or a webhook


class EventKind(StrEnum):
    ISSUED = "issued"
    RENEWED = "renewed"
    FAILED = "failed"
    DELETED = "deleted"

    @property
    def hook(self) -> str:
        """The [hooks] key run for this event: onIssued, onRenewed, onFailed, onDeleted."""
        return "on" + self.value.capitalize()


@dataclass(frozen=True)
class CertEvent:
    kind: EventKind
    domain: str
    names: tuple[str, ...]
    at: datetime
    action: str  # the action that led to it: issue, renew, apply or delete
    reason: str  # why the plan chose that action (a Reason value)
    error: str | None = None
    serial: str | None = None
    not_after: datetime | None = None
    cert_path: str = ""
    key_path: str = ""
    needs_lookup: bool = False  # serial and not_after come from the pair stored now

    def with_stored(self, stored: StoredCert | None) -> CertEvent:
        """This event with the serial and expiry of `stored` (unchanged when None)."""
        if stored is None:
            return replace(self, needs_lookup=False)
        return replace(self, serial=stored.info.serial, not_after=stored.info.not_after,
                       needs_lookup=False)


_OK = {ActionKind.ISSUE: EventKind.ISSUED, ActionKind.RENEW: EventKind.RENEWED,
       ActionKind.DELETE: EventKind.DELETED}
_CAN_FAIL = (ActionKind.ISSUE, ActionKind.RENEW, ActionKind.APPLY)


def events_from_pass(outcomes: Iterable[Outcome], observed: Observed, *, now: datetime,
                     paths: StorePaths) -> list[CertEvent]:
    out: list[CertEvent] = []
    for o in outcomes:
        if o.skipped:
            continue
        kind = o.action.kind
        if o.ok and kind in _OK:
            event = _OK[kind]
        elif not o.ok and kind in _CAN_FAIL:
            event = EventKind.FAILED
        else:
            continue
        out.append(_event(event, o, observed, now, paths))
    return out


def _event(kind: EventKind, o: Outcome, observed: Observed, now: datetime,
           paths: StorePaths) -> CertEvent:
    domain = o.action.domain
    before = observed.stored.get(domain)
    if o.action.spec is not None:
        names = o.action.spec.names
    elif before is not None:
        names = before.info.names or (domain,)
    else:
        names = (domain,)
    try:
        cert_path, key_path = str(paths.cert(domain)), str(paths.key(domain))
    except ConfigError:  # not a store name (cannot happen for a planned action)
        cert_path = key_path = ""
    new_pair = kind in (EventKind.ISSUED, EventKind.RENEWED) or o.stored_fingerprint is not None
    error = None if o.ok else (o.error or "unknown error")[:MAX_ERROR]
    return CertEvent(
        kind=kind, domain=domain, names=tuple(names), at=now, action=o.action.kind.value,
        reason=o.action.reason.value, error=error,
        serial=before.info.serial if before is not None else None,
        not_after=before.info.not_after if before is not None else None,
        cert_path=cert_path, key_path=key_path, needs_lookup=new_pair,
    )


def rfc3339(at: datetime | None) -> str:
    """`2030-01-01T00:00:00Z` (UTC), "" for None."""
    if at is None:
        return ""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hook_env(event: CertEvent) -> dict[str, str]:
    """A hook's entire environment (see ENV_NAMES): no variable of ours is inherited."""
    env = {
        "NJCM_EVENT": event.kind.value,
        "NJCM_DOMAIN": event.domain,
        "NJCM_NAMES": ",".join(event.names),
        "NJCM_CERT_PATH": event.cert_path,
        "NJCM_KEY_PATH": event.key_path,
        "NJCM_SERIAL": event.serial or "",
        "NJCM_NOT_AFTER": rfc3339(event.not_after),
        "NJCM_ERROR": event.error or "",
        "PATH": HOOK_PATH,
    }
    return env


def event_json(event: CertEvent) -> dict[str, object]:
    """The `json` template's body: our own event object (README "Hooks and notifications")."""
    return {
        "event": event.kind.value,
        "domain": event.domain,
        "names": list(event.names),
        "action": event.action,
        "reason": event.reason,
        "serial": event.serial,
        "notAfter": rfc3339(event.not_after) or None,
        "error": event.error,
        "time": rfc3339(event.at),
        "source": "njet-cert-manager",
    }


def event_text(event: CertEvent) -> str:
    """One line for a chat message (the slack, dingtalk and wecom templates)."""
    names = ", ".join(event.names)
    head = f"njet-cert-manager: certificate {event.domain} ({names})"
    if event.kind is EventKind.FAILED:
        return f"{head}: {event.action} failed: {event.error}"
    text = f"{head} {event.kind.value}"
    if event.kind is not EventKind.DELETED and event.serial:
        text += f"; serial {event.serial}, expires {rfc3339(event.not_after)}"
    return text
