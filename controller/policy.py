"""The policy chains: which named checks decide, in which order. The order is the spec.

plan.py builds one `Subject` per desired name and per stored certificate whose name left
desired state, and asks `decide(chain, subject)`:

1. `notes`: every note check that applies adds a plan note, whatever is decided.
2. `checks`, in order: the first finding decides: an `Act` (issue, renew, apply, delete), a
   `Wait` (needed, cannot happen now) or a `Later` (scheduled). No finding: nothing to do
   (converged, or a certificate we never managed).
3. `holds`, only for an Act: the first that applies keeps the action back as its Wait.
4. `caveats`, only for an admitted Act: each that applies adds its Wait next to the action.

Every check handles its own inputs (subject.py), so adding a rule is adding an entry here and
its function in controller/policies/. tests/unit/test_policy_chain.py pins the order.
Pure: no I/O, no clock. Re-exports PolicySettings, Subject, GcRelease, PassDeletions,
renewal_time, renewal_window, wanted_profile and keeps_key (whether a renewal reuses the key).
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.model import Observed
from controller.policies.backoff import backoff
from controller.policies.budget import rate_budget
from controller.policies.njet import (
    bootstrap_key_type_differs,
    issued_not_applied,
    njet_api_unreachable,
    njet_unreachable,
    not_served,
    waiting_for_reload,
)
from controller.policies.orphan import deletion_guard, grace_over, grace_starts, in_grace
from controller.policies.renewal import (
    expired,
    forced_renewal,
    keeps_key,
    key_type_changed,
    names_changed,
    profile_changed,
    profile_not_offered,
    renewal_due,
    renewal_time,
    renewal_window,
    wanted_profile,
)
from controller.policies.store import cert_missing, stored_unusable
from controller.policies.subject import (
    Act,
    Check,
    Finding,
    GcRelease,
    Hold,
    Later,
    Note,
    PassDeletions,
    PolicySettings,
    Subject,
    Wait,
)
from controller.policies.validity import not_yet_valid

__all__ = [
    "DESIRED",
    "ORPHANED",
    "Chain",
    "Decision",
    "GcRelease",
    "PassDeletions",
    "PolicySettings",
    "Subject",
    "decide",
    "keeps_key",
    "pass_notes",
    "renewal_time",
    "renewal_window",
    "wanted_profile",
]


@dataclass(frozen=True)
class Chain:
    """One kind of subject's rules, each part in order (see the module docstring)."""

    name: str
    checks: tuple[Check, ...]
    holds: tuple[Hold, ...] = ()
    caveats: tuple[Hold, ...] = ()
    notes: tuple[Note, ...] = ()


DESIRED = Chain(
    "desired",
    checks=(
        # nothing usable stored: issue
        cert_missing,
        stored_unusable,
        # the stored pair must be replaced: renew
        forced_renewal,
        names_changed,
        key_type_changed,
        profile_changed,
        expired,
        renewal_due,
        # a good pair that is not valid yet: wait until its notBefore
        not_yet_valid,
        # a good pair NJet cannot take now: wait
        njet_unreachable,
        waiting_for_reload,
        # a good pair NJet does not serve: apply
        not_served,
    ),
    # rate_budget needs the pass-wide figures plan() puts in Subject.budget
    holds=(backoff, rate_budget),
    caveats=(issued_not_applied,),
    notes=(bootstrap_key_type_differs, profile_not_offered),
)

ORPHANED = Chain(
    "orphaned",
    checks=(grace_starts, grace_over, in_grace),
    # needs the pass-wide count plan() puts in Subject.deletions
    holds=(deletion_guard,),
)


@dataclass(frozen=True)
class Decision:
    """What one chain decided for one subject; `decided_by` names the check or hold."""

    act: Act | None = None
    waits: tuple[Wait, ...] = ()
    later: tuple[Later, ...] = ()
    notes: tuple[str, ...] = ()
    decided_by: str | None = None


def decide(chain: Chain, s: Subject) -> Decision:
    notes = tuple(n for n in (note(s) for note in chain.notes) if n is not None)
    found: Finding | None = None
    by: str | None = None
    for check in chain.checks:
        found = check(s)
        if found is not None:
            by = check.__name__
            break
    if found is None:
        return Decision(notes=notes)
    if isinstance(found, Wait):
        return Decision(waits=(found,), notes=notes, decided_by=by)
    if isinstance(found, Later):
        return Decision(later=(found,), notes=notes, decided_by=by)
    for hold in chain.holds:
        held = hold(s, found)
        if held is not None:
            return Decision(waits=(held,), notes=notes, decided_by=hold.__name__)
    caveats = tuple(w for w in (c(s, found) for c in chain.caveats) if w is not None)
    return Decision(act=found, waits=caveats, notes=notes, decided_by=by)


def pass_notes(observed: Observed, settings: PolicySettings) -> tuple[str, ...]:
    """Notes about the whole pass rather than one name."""
    note = njet_api_unreachable(observed.njet_error, store_only=settings.store_only)
    return () if note is None else (note,)
