"""What a policy check sees (`Subject`) and what it may answer (`Act`, `Wait`, `Later`). Pure.

A check is a plain function over one Subject. It looks only at the fields it needs and answers
None when its inputs do not apply (no stored certificate, not desired, store-only mode...), so
it may sit anywhere in a chain and nothing relies on its position. Kinds of check:

- `Check(subject)`: a finding that decides; the first one in a chain wins.
- `Hold(subject, act)`: a wait that keeps a decided action back (backoff; later a lease held
  elsewhere, a rate-limit budget); the first one wins and replaces the action.
- a caveat is a `Hold` too, but its wait is reported next to the admitted action.
- `Note(subject)`: a remark for the plan's notes, whatever was decided.

Built by plan.py (one Subject per desired name and per stored orphan); the chains that order
the checks are in controller/policy.py. A check that needs a figure of the whole pass (the
deletion guard: how many deletions of how many stored certificates; the rate-limit budget: what
is left after this pass's earlier orders) reads it from a field plan() fills in
(`Subject.deletions`, `Subject.budget`), so each check still looks at one Subject only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.model import (
    DEFAULT_KEY_TYPE,
    ActionKind,
    CertificateSpec,
    KeyType,
    NjetTarget,
    StoredCert,
)
from controller.policies.ratelimits import OrderBudget
from controller.reasons import Reason
from controller.status import CertStatus


@dataclass(frozen=True, kw_only=True)
class PolicySettings:
    """The policy's knobs, from the TOML (app.policy_settings). `store_only` has no default:
    whether NJet is applied to is a choice every caller makes ([njet] apiAddress = "")."""

    store_only: bool
    renew_before: timedelta = timedelta(days=30)
    default_key_type: KeyType = DEFAULT_KEY_TYPE
    delete_grace: timedelta = timedelta(hours=24)
    # the deletion guard holds a pass that would delete more than this share of the stored
    # certificates we manage ([controller] maxDeleteShare), or all of them
    max_delete_share: float = 0.5
    # [acme] profile ("": the CA's default) and reuseKey, for certificates that set neither
    default_profile: str = ""
    reuse_key: bool = False
    # [acme] ari: renewal times chosen inside the CA's ARI window count (False: ignored)
    ari: bool = True
    # the CAs' directory URLs ([acme]'s, then the [[acme.fallback]] ones) and [acme]
    # fallbackAfter: which CA an order starts at, for `diff` (policies/fallback.py)
    cas: tuple[str, ...] = ()
    fallback_after: int = 2


@dataclass(frozen=True)
class GcRelease:
    """An operator's one-time release of deletions the guard held (`gc confirm`): the names
    pending at confirmation time. Read from `.lego/gc-confirm.json`, an input of plan()."""

    names: frozenset[str]
    confirmed_at: datetime
    by: str = ""  # who confirmed: "cli", or "admin <peer>"


@dataclass(frozen=True)
class PassDeletions:
    """The pass-wide figures the deletion guard needs (plan.py fills them in, once a pass).

    `pending`: the names this pass would delete (managed orphans whose grace is over);
    `stored`: stored certificates we manage (those with a status); `release`: the operator's
    confirmation, if one is on file (it covers the pass only if it names every pending one).
    """

    pending: frozenset[str]
    stored: int
    release: GcRelease | None = None

    def too_many(self, share: float) -> bool:
        """More than `share` of the stored certificates, or every one of them (even one of
        one)."""
        n = len(self.pending)
        return n > 0 and (n >= self.stored or n > share * self.stored)

    @property
    def released(self) -> bool:
        return self.release is not None and self.pending <= self.release.names


@dataclass(frozen=True)
class Subject:
    """Everything the checks may look at for one name (assembled by plan.py).

    A desired name has `spec`, `wanted_key_type` and `spec_hash`; a stored certificate whose
    name left desired state (an orphan) has none of them (None), and no `targets`.
    """

    domain: str
    spec: CertificateSpec | None
    stored: StoredCert | None
    problem: str | None  # why stored files are unusable, if they are
    status: CertStatus | None
    wanted_key_type: KeyType | None
    spec_hash: str | None  # identity of what is wanted (plan.spec_hash); resets the backoff
    served_fingerprint: str | None  # best knowledge of what NJet serves (None = unknown)
    njet_present: bool  # the running NJet has the block (always False in store-only mode)
    targets: tuple[NjetTarget, ...]  # where an action for this name applies in NJet
    njet_error: str | None  # NJet's API could not be read this pass
    njet_unmatched: str | None  # why the running NJet has no server for the name, if known
    bootstrap_key_type: KeyType | None  # key type of the block's ssl_certificate, if readable
    now: datetime
    settings: PolicySettings
    # pass-wide deletion figures for the deletion guard (None: not known, or no deletion due)
    deletions: PassDeletions | None = None
    # what this subject's order would spend of the rate-limit budget after the orders this pass
    # admitted before it (plan.py fills it in; None: no budget, or no order decided)
    budget: OrderBudget | None = None

    @property
    def desired(self) -> bool:
        return self.spec is not None


@dataclass(frozen=True)
class Act:
    """Do something now: issue, renew, apply or delete."""

    kind: ActionKind
    reason: Reason
    message: str


@dataclass(frozen=True)
class Wait:
    """Something is needed but cannot happen now (until `until`, when known)."""

    reason: Reason
    message: str
    until: datetime | None = None


@dataclass(frozen=True)
class Later:
    """Nothing to do now; something is scheduled at `at` (informational, not a blocker)."""

    reason: Reason
    message: str
    at: datetime | None = None


Finding = Act | Wait | Later
Check = Callable[[Subject], Finding | None]
Hold = Callable[[Subject, Act], Wait | None]
Note = Callable[[Subject], str | None]
