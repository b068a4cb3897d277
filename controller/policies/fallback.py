"""Which CA an order goes to: [acme]'s first, the `[[acme.fallback]]` CAs after it. Pure.

The executor (execute.py) asks this for every issue/renew when the issuer stands for several
CAs (ports.CaChoices), from the certificate's status as the plan copied it into the Action
(`ca_failures`: consecutive failed orders per CA directory URL, kept in status.py and reset by
any issuance, so the next renewal starts at the primary again):

- `choose_ca`: the first CA, in order, with fewer than `fallback_after` consecutive failures;
  when every one has reached it, the one with the fewest (the earlier on a tie), so failing CAs
  take turns instead of one of them being given up for good.
- `failure_of`: what an order's error means for its CA. UNREACHABLE (its directory cannot be
  reached: connection refused, DNS or TLS failure) and UNUSABLE (a ConfigError: the CA cannot be
  used as configured) exhaust the CA at once; FAILING (connection errors, 5xx, rate limits)
  counts one; REJECTED (the CA refused the order: a PermanentError, e.g. rejectedIdentifier)
  is no outage, so the CA's streak ends and no other CA is asked.
- `after_failure`: the streaks after one failed order.
- `fallback_start`: the CA an order starts at when it is not [acme]'s (plan.py, for `diff`).
- `next_ca`: whether the same attempt goes on at another CA: only when the failing CA has now
  reached `fallback_after` (at once for UNREACHABLE and UNUSABLE), never after REJECTED, and
  each CA at most once per attempt.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from enum import Enum

from controller.errors import CaUnreachableError, ConfigError, PermanentError

DEFAULT_FALLBACK_AFTER = 2  # [acme] fallbackAfter


class CaFailure(Enum):
    UNREACHABLE = "unreachable"
    UNUSABLE = "unusable"
    FAILING = "failing"
    REJECTED = "rejected"


def failure_of(exc: BaseException) -> CaFailure:
    """The kind of failure an issuer's error is (CaUnreachableError, ConfigError,
    PermanentError; any other error, a TemporaryError above all, is FAILING)."""
    if isinstance(exc, CaUnreachableError):
        return CaFailure.UNREACHABLE
    if isinstance(exc, ConfigError):
        return CaFailure.UNUSABLE
    if isinstance(exc, PermanentError):
        return CaFailure.REJECTED
    return CaFailure.FAILING


def choose_ca(
    cas: Sequence[str],
    failures: Mapping[str, int],
    fallback_after: int,
    *,
    tried: Collection[int] = (),
) -> int | None:
    """The index into `cas` (directory URLs, primary first) to order from, leaving out those
    in `tried`; None when every CA was tried."""
    left = [i for i in range(len(cas)) if i not in tried]
    if not left:
        return None
    for i in left:
        if failures.get(cas[i], 0) < fallback_after:
            return i
    return min(left, key=lambda i: (failures.get(cas[i], 0), i))


def fallback_start(cas: Sequence[str], failures: Mapping[str, int],
                   fallback_after: int) -> str | None:
    """The directory URL of the CA the next order starts at when that is not [acme]'s (for
    `diff`), else None."""
    index = choose_ca(cas, failures, fallback_after) if len(cas) > 1 else None
    return cas[index] if index else None


def after_failure(
    failures: Mapping[str, int], ca: str, failure: CaFailure, fallback_after: int
) -> dict[str, int]:
    """The consecutive failures per CA after an order from `ca` failed with `failure`."""
    out = dict(failures)
    count = out.get(ca, 0)
    if failure is CaFailure.REJECTED:
        out.pop(ca, None)
    elif failure is CaFailure.FAILING:
        out[ca] = count + 1
    else:
        out[ca] = max(count + 1, fallback_after)
    return out


def next_ca(
    cas: Sequence[str],
    failures: Mapping[str, int],
    fallback_after: int,
    *,
    tried: Sequence[int],
    failure: CaFailure,
) -> int | None:
    """After the order from `cas[tried[-1]]` failed with `failure` (and `failures` counts it):
    the CA to try next within the same attempt, or None (the attempt fails, the backoff runs)."""
    if failure is CaFailure.REJECTED:
        return None
    if failures.get(cas[tried[-1]], 0) < fallback_after:
        return None
    return choose_ca(cas, failures, fallback_after, tried=tried)
