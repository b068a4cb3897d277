"""The orphan lifecycle: a stored certificate whose name left desired state. Pure.

Only certificates we managed (they have a status) are touched; one written by hand with lego
has none and is left alone (no check applies). The first pass without the name schedules the
grace period (fold.py stamps `orphaned_at`), later passes show when it ends, and once
`deleteGracePeriod` is over the pair is deleted (moved to quarantine/ by the executor).

The deletion guard (`deletion_guard`, a hold) keeps every deletion of a pass back when that
pass would delete more than `maxDeleteShare` of the stored certificates we manage, or all of
them: an include that matches nothing, an unmounted volume or a bad edit must not empty the
store. An operator's confirmation (`gc confirm`) naming every pending deletion releases it once.
"""

from __future__ import annotations

from datetime import datetime

from controller.model import ActionKind
from controller.policies.subject import Act, Later, Subject, Wait
from controller.reasons import Reason


def _orphaned_since(s: Subject) -> datetime | None:
    """When a managed, stored, no longer desired name was first seen orphaned (None if not)."""
    if s.desired or s.stored is None or s.status is None:
        return None
    return s.status.orphaned_at


def _managed_orphan(s: Subject) -> bool:
    return not s.desired and s.stored is not None and s.status is not None


def grace_starts(s: Subject) -> Later | None:
    """First pass without the name: the grace period starts now."""
    if not _managed_orphan(s) or _orphaned_since(s) is not None:
        return None
    return Later(Reason.ORPHAN_GRACE, "no longer desired; grace period starts",
                 at=s.now + s.settings.delete_grace)


def grace_over(s: Subject) -> Act | None:
    """The grace period is over: delete the pair."""
    since = _orphaned_since(s)
    if since is None or s.now < since + s.settings.delete_grace:
        return None
    return Act(ActionKind.DELETE, Reason.NOT_DESIRED, f"not desired since {since.isoformat()}")


def in_grace(s: Subject) -> Later | None:
    """Within the grace period: deletion is scheduled."""
    since = _orphaned_since(s)
    if since is None or s.now >= since + s.settings.delete_grace:
        return None
    return Later(Reason.ORPHAN_GRACE, "no longer desired", at=since + s.settings.delete_grace)


def deletion_guard(s: Subject, act: Act) -> Wait | None:
    """Hold a deletion back while the pass would delete too many (see the module docstring)."""
    d = s.deletions
    if act.kind is not ActionKind.DELETE or d is None:
        return None
    share = s.settings.max_delete_share
    if not d.too_many(share) or d.released:
        return None
    n = len(d.pending)
    why = "all of them" if n >= d.stored else f"more than maxDeleteShare {share:g}"
    message = (
        f"deletion guard: this pass would delete {n} of {d.stored} stored certificates ({why}); "
        "nothing is deleted until an operator confirms once: `njet-cert-manager gc confirm` "
        "or POST /api/v1/gc/confirm"
    )
    if d.release is not None:
        message += (f" (the confirmation of {d.release.confirmed_at.isoformat()} does not cover "
                    "all of these deletions: confirm again)")
    return Wait(Reason.DELETION_GUARD, message)
