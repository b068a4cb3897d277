"""When and why a stored certificate of a desired name is renewed. Pure.

`renewal_window()` / `renewal_time()`: the instant renewal becomes due (also used by
plan.next_renewal for `certs list`, metrics and the timer). The checks: an operator's forced
renewal, names or key type that changed (the CN as certinfo.csr_common_name picks it: a first
name over 64 characters cannot be the CN), expiry, and the renewal time reached.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from controller.certinfo import csr_common_name
from controller.model import ActionKind, CertificateSpec, KeyType, StoredCert
from controller.policies.subject import Act, Subject
from controller.reasons import Reason
from controller.status import CertStatus

SHORT_LIFETIME = timedelta(days=10)


def renewal_window(lifetime: timedelta, renew_before: timedelta) -> timedelta:
    """How long before not_after to renew.

    min(renewBefore, 1/3 of the lifetime — 1/2 for lifetimes under 10 days), so a 90-day cert
    renews at 30 days left and a 6-day one at 3 days left instead of looping.
    """
    fraction = lifetime / 2 if lifetime < SHORT_LIFETIME else lifetime / 3
    return min(renew_before, fraction)


def renewal_time(
    stored: StoredCert, status: CertStatus | None, renew_before: timedelta
) -> datetime:
    """The instant renewal becomes due.

    A time chosen once and persisted in status (e.g. inside an ARI window) takes over, unless
    less than a tenth of the lifetime would be left then (emergency override).
    """
    info = stored.info
    lifetime = info.not_after - info.not_before
    default = info.not_after - renewal_window(lifetime, renew_before)
    if status is not None and status.renewal_at is not None:
        emergency = info.not_after - lifetime / 10
        return min(status.renewal_at, emergency)
    return default


def _renewable(s: Subject) -> tuple[CertificateSpec, StoredCert] | None:
    """The spec and stored pair when the name is desired and has a usable stored pair."""
    if s.spec is None or s.stored is None:
        return None
    return s.spec, s.stored


def forced_renewal(s: Subject) -> Act | None:
    """An operator (or NJet's code-11 trap) asked for a renewal of the pair now stored.

    A request recorded for another pair (`force_renew_of`) is done: the renewal completed but
    the status write was lost, so it is not repeated.
    """
    pair = _renewable(s)
    if pair is None or s.status is None or not s.status.force_renew:
        return None
    if s.status.force_renew_of not in (None, pair[1].info.fingerprint):
        return None
    return Act(ActionKind.RENEW, Reason.FORCED, "renewal requested")


def names_changed(s: Subject) -> Act | None:
    """The stored CN/SAN differ from the block's server_names."""
    pair = _renewable(s)
    if pair is None:
        return None
    have, want = pair[1].info, pair[0].names
    if set(have.names) == set(want) and common_name_agrees(have.common_name, want):
        return None
    gained = sorted(set(want) - set(have.names))
    lost = sorted(set(have.names) - set(want))
    parts = [f"+{','.join(gained)}" if gained else "", f"-{','.join(lost)}" if lost else ""]
    detail = " ".join(p for p in parts if p) or (
        f"CN {have.common_name} -> {csr_common_name(want) or '(none)'}")
    return Act(ActionKind.RENEW, Reason.NAMES_CHANGED, f"names changed: {detail}")


def common_name_agrees(have: str | None, want: tuple[str, ...]) -> bool:
    """Whether a stored CN is the one a certificate for `want` should have.

    CN = the first name, as always, when it fits in a CN (64 characters). When it does not, our
    CSR asks for the first name that fits, or none (certinfo.csr_common_name), and a CA may pick
    its own among the names or leave the CN out: any of the names, or no CN, agrees. Otherwise
    such a certificate would be renewed again on every pass.
    """
    if want and csr_common_name(want) == want[0]:
        return (have or "") == want[0]
    return have is None or have in want


def key_type_changed(s: Subject) -> Act | None:
    """The stored key is not of the wanted key type."""
    pair = _renewable(s)
    if pair is None or s.wanted_key_type is None:
        return None
    have: KeyType | None = pair[1].info.key_type
    if have == s.wanted_key_type:
        return None
    return Act(ActionKind.RENEW, Reason.KEY_TYPE_CHANGED,
               f"key type {have or 'unknown'} -> {s.wanted_key_type}")


def expired(s: Subject) -> Act | None:
    pair = _renewable(s)
    if pair is None or s.now < pair[1].info.not_after:
        return None
    return Act(ActionKind.RENEW, Reason.EXPIRED,
               f"expired at {pair[1].info.not_after.isoformat()}")


def renewal_due(s: Subject) -> Act | None:
    """The renewal time (renewal_time()) has come."""
    pair = _renewable(s)
    if pair is None:
        return None
    stored = pair[1]
    due = renewal_time(stored, s.status, s.settings.renew_before)
    if s.now < due:
        return None
    left = stored.info.not_after - s.now
    return Act(ActionKind.RENEW, Reason.RENEWAL_DUE,
               f"renewal due since {due.isoformat()} ({_days(left)} left)")


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f}d" if abs(days) >= 1 else f"{delta.total_seconds() / 3600:.1f}h"
