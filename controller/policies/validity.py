"""Checks over a stored certificate's validity period that are not about renewal. Pure.

`not_yet_valid`: a pair whose notBefore is still ahead (a CA clock ahead of ours, a pair
written by hand) is not servable: clients reject it. It is neither in sync nor applied; the
plan waits until notBefore (the loop's deadline wakes then), and the next pass applies it.
"""

from __future__ import annotations

from controller.policies.subject import Subject, Wait
from controller.reasons import Reason


def not_yet_valid(s: Subject) -> Wait | None:
    """A desired name's stored pair is not valid before a time still ahead: wait until then."""
    if s.stored is None or not s.desired:
        return None
    starts = s.stored.info.not_before
    if s.now >= starts:
        return None
    return Wait(Reason.NOT_YET_VALID, "not valid yet (clients would reject it)", until=starts)
