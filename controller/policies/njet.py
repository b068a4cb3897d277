"""Checks over the running NJet: apply what it does not serve, or wait until it can. Pure.

None of them applies in store-only mode (`[njet] apiAddress = ""`): nothing is ever applied.
"""

from __future__ import annotations

from controller.model import ActionKind
from controller.policies.subject import Act, Subject, Wait
from controller.reasons import Reason

_CANNOT_APPLY = "cannot apply: "
_NOT_APPLIED = "issued cert will not be applied: "
_NO_SUCH_SERVER = "the running NJet has no such server"


def _outside_njet(s: Subject) -> bool:
    """A desired name whose block the running NJet does not have (or could not tell)."""
    return s.desired and not s.settings.store_only and not s.njet_present


def _why_unmatched(s: Subject) -> str:
    return _NO_SUCH_SERVER if s.njet_unmatched is None else s.njet_unmatched


def njet_unreachable(s: Subject) -> Wait | None:
    """A stored pair cannot be applied: NJet's API could not be read this pass."""
    if s.stored is None or not _outside_njet(s) or not s.njet_error:
        return None
    return Wait(Reason.NJET_UNREACHABLE, _CANNOT_APPLY + s.njet_error)


def waiting_for_reload(s: Subject) -> Wait | None:
    """A stored pair cannot be applied: the block is in njet.conf, not in the running NJet.

    Does not apply while NJet is unreachable (then whether it was reloaded is unknown)."""
    if s.stored is None or not _outside_njet(s) or s.njet_error:
        return None
    return Wait(Reason.WAITING_FOR_RELOAD, _CANNOT_APPLY + _why_unmatched(s))


def not_served(s: Subject) -> Act | None:
    """NJet runs the block but serves something other than the stored pair: apply it."""
    if s.stored is None or not s.desired or s.settings.store_only or not s.njet_present:
        return None
    if s.served_fingerprint == s.stored.info.fingerprint:
        return None
    shown = s.served_fingerprint[:16] if s.served_fingerprint else "unknown/other"
    return Act(ActionKind.APPLY, Reason.NOT_SERVED,
               f"NJet serves {shown}, stored {s.stored.info.fingerprint[:16]}")


def issued_not_applied(s: Subject, act: Act) -> Wait | None:
    """Caveat of an issue/renew: the new pair goes to the store, but cannot reach NJet yet."""
    if act.kind not in (ActionKind.ISSUE, ActionKind.RENEW) or not _outside_njet(s):
        return None
    if s.njet_error:
        return Wait(Reason.NJET_UNREACHABLE, _NOT_APPLIED + s.njet_error)
    return Wait(Reason.WAITING_FOR_RELOAD, _NOT_APPLIED + _why_unmatched(s))


def bootstrap_key_type_differs(s: Subject) -> str | None:
    """Note: NJet keeps serving the block's bootstrap cert of the other type to some clients."""
    boot, want = s.bootstrap_key_type, s.wanted_key_type
    if s.settings.store_only or boot is None or want is None:
        return None
    if boot.njet_cert_type == want.njet_cert_type:
        return None
    return (f"{s.domain}: keyType {want} differs from the block's bootstrap "
            f"{boot}: NJet would serve both, RSA-only clients keep the old cert")


def njet_api_unreachable(njet_error: str | None, *, store_only: bool) -> str | None:
    """Note for the whole pass: NJet's API could not be read."""
    if not njet_error or store_only:
        return None
    return f"NJet API unreachable: {njet_error}"
