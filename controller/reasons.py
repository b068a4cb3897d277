"""Why the controller does (or does not do) something: one constant per reason, documented.

Reasons travel with every action and waiting entry into logs, `diff`, the admin API and metrics.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # --- reasons to act ------------------------------------------------------------------
    MISSING = "Missing"
    """No certificate is stored for a desired name: issue one."""

    STORED_UNUSABLE = "StoredUnusable"
    """Files exist but cannot be used (key does not match, unparsable): issue a new pair."""

    NAMES_CHANGED = "NamesChanged"
    """The stored certificate's CN/SAN differ from the block's server_names: renew."""

    KEY_TYPE_CHANGED = "KeyTypeChanged"
    """The stored key is not of the wanted key type: renew with a new key."""

    PROFILE_CHANGED = "ProfileChanged"
    """The ACME profile wanted (a certificate's own, else [acme]'s) is not the one the stored
    certificate was ordered with: renew. An unknown recorded profile (a pair adopted from lego)
    never counts as changed."""

    EXPIRED = "Expired"
    """The stored certificate has expired: renew now."""

    RENEWAL_DUE = "RenewalDue"
    """Remaining lifetime dropped below the renewal window (see policy.renewal_time)."""

    FORCED = "Forced"
    """An operator asked for a renewal (admin API)."""

    NOT_SERVED = "NotServed"
    """A valid stored certificate is not what NJet serves for the block: apply it."""

    NOT_DESIRED = "NotDesired"
    """A certificate we managed is no longer wanted and its grace period is over: delete it."""

    # --- reasons to wait -----------------------------------------------------------------
    BACKOFF = "Backoff"
    """Earlier attempts failed; the next one waits until the per-certificate backoff ends."""

    WAITING_FOR_RELOAD = "WaitingForReload"
    """The block is in njet.conf but not in the running NJet (edited, not reloaded)."""

    ORPHAN_GRACE = "OrphanGrace"
    """No longer desired; deletion is scheduled after deleteGracePeriod."""

    NJET_UNREACHABLE = "NjetUnreachable"
    """NJet's API could not be read, so what it serves is unknown; nothing is applied."""

    DELETION_GUARD = "DeletionGuard"
    """The pass would delete more than `[controller] maxDeleteShare` of the stored certificates
    we manage, or all of them: nothing is deleted until an operator confirms once
    (`njet-cert-manager gc confirm` or POST /api/v1/gc/confirm)."""

    RATE_LIMIT_BUDGET = "RateLimitBudget"
    """The order would exceed a rate limit of the CA (`[acme.rateLimits]`, counted in
    `.lego/ledger/`), or the CA answered rateLimited for the name's registered domain: it
    waits until the window frees a slot. Renewals take a short budget before first issuances."""

    NOT_YET_VALID = "NotYetValid"
    """The stored certificate's notBefore is still ahead: it is not servable yet, so it is not
    applied until then (the wait ends at notBefore)."""


ACTING = frozenset(
    {
        Reason.MISSING,
        Reason.STORED_UNUSABLE,
        Reason.NAMES_CHANGED,
        Reason.KEY_TYPE_CHANGED,
        Reason.PROFILE_CHANGED,
        Reason.EXPIRED,
        Reason.RENEWAL_DUE,
        Reason.FORCED,
        Reason.NOT_SERVED,
        Reason.NOT_DESIRED,
    }
)
