"""The per-certificate backoff: earlier failures hold the next attempt back. Pure.

A hold (subject.Hold): it applies to whatever action was decided, as long as the failures
were counted for the same spec (`spec_hash`; a changed spec starts afresh) and the backoff
recorded in status (fold.py) has not ended. A failed order (not this node's own failure:
`failure_scope`) does not hold an apply: pushing a pair already stored costs the CA nothing,
and in fleet mode it is how a node serves what another node ordered.
"""

from __future__ import annotations

from controller.model import ActionKind
from controller.policies.subject import Act, Subject, Wait
from controller.reasons import Reason
from controller.status import FAILURE_NODE, in_backoff


def backoff(s: Subject, act: Act) -> Wait | None:
    st = s.status
    if st is None or s.spec_hash is None or st.spec_hash not in (None, s.spec_hash):
        return None
    if not in_backoff(st, s.now):
        return None
    if act.kind is ActionKind.APPLY and st.failure_scope != FAILURE_NODE:
        return None
    return Wait(
        Reason.BACKOFF,
        f"{act.kind} ({act.reason}) after {st.attempts} failed attempt(s): "
        f"{st.last_failure or 'unknown error'}",
        until=st.backoff_until,
    )
