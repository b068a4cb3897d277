"""Checks over what the store holds for a desired name: nothing usable there means issue. Pure."""

from __future__ import annotations

from controller.model import ActionKind
from controller.policies.subject import Act, Subject
from controller.reasons import Reason


def cert_missing(s: Subject) -> Act | None:
    """A desired name with no files at all: issue a certificate."""
    if s.desired and s.stored is None and s.problem is None:
        return Act(ActionKind.ISSUE, Reason.MISSING, "no certificate stored")
    return None


def stored_unusable(s: Subject) -> Act | None:
    """A desired name whose files cannot be used (key does not match, unparsable): issue."""
    if s.desired and s.stored is None and s.problem is not None:
        return Act(ActionKind.ISSUE, Reason.STORED_UNUSABLE, s.problem)
    return None
