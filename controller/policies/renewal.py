"""When and why a stored certificate of a desired name is renewed. Pure.

`renewal_window()` / `renewal_time()`: the instant renewal becomes due (also used by
plan.next_renewal for `certs list`, metrics and the timer); `renewal_choice()` says which rule
set it (a time chosen inside the CA's ARI window, the lifetime rule, the emergency override),
for `diff`; `replaces_id()` the ARI identifier a renewal order names as the one it replaces.
The checks: an operator's forced renewal, names or key type that changed (the CN as
certinfo.csr_common_name picks it: a first name over 64 characters cannot be the CN), the ACME
profile that changed, expiry, and the renewal time reached. `wanted_profile()` is the profile a
spec wants (its own, else [acme]'s; plan.spec_hash counts it); `keeps_key()` whether a renewal
reuses the stored key (reuseKey); the note `profile_not_offered` says when the pair has the
CA's default profile instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from controller.certinfo import csr_common_name
from controller.model import ActionKind, CertificateSpec, KeyType, StoredCert
from controller.policies.subject import Act, PolicySettings, Subject
from controller.reasons import Reason
from controller.status import RENEWAL_SOURCE_ARI, CertStatus

SHORT_LIFETIME = timedelta(days=10)


def renewal_window(lifetime: timedelta, renew_before: timedelta) -> timedelta:
    """How long before not_after to renew.

    min(renewBefore, 1/3 of the lifetime — 1/2 for lifetimes under 10 days), so a 90-day cert
    renews at 30 days left and a 6-day one at 3 days left instead of looping.
    """
    fraction = lifetime / 2 if lifetime < SHORT_LIFETIME else lifetime / 3
    return min(renew_before, fraction)


LIFETIME_RULE = "lifetime"
EMERGENCY_RULE = "emergency"
CHOSEN = "chosen"


@dataclass(frozen=True)
class RenewalChoice:
    """When a stored certificate renews and why: `source` RENEWAL_SOURCE_ARI (a time chosen
    inside the CA's ARI window), CHOSEN (a time chosen once by another rule), LIFETIME_RULE
    (renewal_window()), or EMERGENCY_RULE (a chosen time leaving less than a tenth of the
    lifetime, overridden). `window_*`/`explanation_url`: the CA's window for this certificate,
    when one is known (also when the lifetime rule decides)."""

    at: datetime
    source: str
    window_start: datetime | None = None
    window_end: datetime | None = None
    explanation_url: str | None = None


def renewal_choice(stored: StoredCert, status: CertStatus | None, renew_before: timedelta,
                   *, ari: bool = True) -> RenewalChoice:
    """The instant renewal becomes due, and which rule set it.

    A time chosen once and persisted in status for this certificate (e.g. inside an ARI window;
    one chosen for another certificate is ignored, and with `ari` False one from ARI too)
    takes over, unless less than a tenth of the lifetime would be left then (emergency
    override). Otherwise the lifetime rule (renewal_window()).
    """
    info = stored.info
    lifetime = info.not_after - info.not_before
    chosen = status.renewal_at if status is not None else None
    if status is not None and chosen is not None and (
            status.renewal_for not in (None, info.fingerprint)
            or (status.renewal_source == RENEWAL_SOURCE_ARI and not ari)):
        chosen = None
    if status is not None and chosen is not None:
        emergency = info.not_after - lifetime / 10
        choice = (RenewalChoice(emergency, EMERGENCY_RULE) if emergency < chosen
                  else RenewalChoice(chosen, status.renewal_source or CHOSEN))
    else:
        choice = RenewalChoice(info.not_after - renewal_window(lifetime, renew_before),
                               LIFETIME_RULE)
    state = status.ari if status is not None and ari else None
    if state is None or state.fingerprint != info.fingerprint or not state.has_window:
        return choice
    return replace(choice, window_start=state.window_start, window_end=state.window_end,
                   explanation_url=state.explanation_url)


def renewal_time(
    stored: StoredCert, status: CertStatus | None, renew_before: timedelta, *, ari: bool = True
) -> datetime:
    """The instant renewal becomes due (renewal_choice().at)."""
    return renewal_choice(stored, status, renew_before, ari=ari).at


def replaces_id(s: Subject) -> str | None:
    """The ARI identifier of the stored certificate a renewal replaces (RFC 9773 §5: the
    newOrder's `replaces`), when the CA gave a renewal window for it; else None."""
    if s.stored is None or s.status is None or not s.settings.ari:
        return None
    state = s.status.ari
    if state is None or state.fingerprint != s.stored.info.fingerprint or not state.has_window:
        return None
    return state.cert_id or None


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


def wanted_profile(spec: CertificateSpec, settings: PolicySettings) -> str:
    """The ACME profile `spec` wants: its table's, else [acme] profile ("": the CA's default)."""
    return spec.profile if spec.profile is not None else settings.default_profile


def profile_changed(s: Subject) -> Act | None:
    """The profile wanted is not the one the stored pair was ordered with. An unknown recorded
    profile (None: a pair adopted from lego, or stored before profiles were recorded) is taken
    as the wanted one: it never renews on its own."""
    pair = _renewable(s)
    if pair is None or s.status is None or s.status.profile is None:
        return None
    have, want = s.status.profile, wanted_profile(pair[0], s.settings)
    if have == want:
        return None
    return Act(ActionKind.RENEW, Reason.PROFILE_CHANGED,
               f"profile {have or '(CA default)'} -> {want or '(CA default)'}")


def profile_not_offered(s: Subject) -> str | None:
    """Note: the pair was ordered without the profile still wanted, because the CA did not
    offer it and it is only preferred (profileRequired false)."""
    pair = _renewable(s)
    st = s.status
    if pair is None or st is None or not st.profile or st.profile_ordered != "":
        return None
    if st.profile != wanted_profile(pair[0], s.settings):
        return None  # a profile change renews it anyway
    return (f"{s.domain}: the CA did not offer the profile {st.profile!r}: the certificate has "
            "the CA's default profile (profileRequired = true refuses to order without it)")


def keeps_key(s: Subject, act: Act) -> bool:
    """Whether `act` renews with the stored key: reuseKey (the table's, else [acme]'s) is on,
    the stored key is of the wanted type (a key type change always makes a new key), and NJet's
    code-11 trap did not ask for a fresh one."""
    pair = _renewable(s)
    if act.kind is not ActionKind.RENEW or pair is None or not pair[1].key_matches:
        return False
    spec, stored = pair
    reuse = spec.reuse_key if spec.reuse_key is not None else s.settings.reuse_key
    if not reuse or act.reason is Reason.KEY_TYPE_CHANGED:
        return False
    if stored.info.key_type is None or stored.info.key_type != s.wanted_key_type:
        return False
    return not (s.status is not None and s.status.new_key)


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
    due = renewal_time(stored, s.status, s.settings.renew_before, ari=s.settings.ari)
    if s.now < due:
        return None
    left = stored.info.not_after - s.now
    return Act(ActionKind.RENEW, Reason.RENEWAL_DUE,
               f"renewal due since {due.isoformat()} ({_days(left)} left)")


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f}d" if abs(days) >= 1 else f"{delta.total_seconds() / 3600:.1f}h"
