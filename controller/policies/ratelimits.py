"""The rate-limit budget's arithmetic: limits, ledger events, and what an order would spend. Pure.

A CA counts what an account does over sliding windows. The four budgets of `[acme.rateLimits]`
(`Limit`): new orders per account per 3 hours; certificates per registered domain per 7 days;
certificates for the exact same name set per 7 days; failed validations per host name per
hour. `limits_for` gives Let's Encrypt's published limits for its two directory URLs and none
for any other CA, each overridden by a configured value.

The ledger (ports.RateLedger; adapters/store/ledger.py on disk) holds `LedgerEvent`s: each order
placed (and whether a certificate came of it), each failed validation, and each `rateLimited`
answer with the instant its Retry-After ends; the executor records them (`order_events`), the
reconciler hands a `LedgerSnapshot` to plan() as a `BudgetInput`. `BudgetBook` counts the
snapshot into buckets (a limit and what it counts by: the account, a registered domain, a name
set, a host) and, as plan() walks this pass's orders by priority (policies/budget.py), says what
each would spend (`OrderBudget`) and spends it. The rate-budget hold refuses an order that finds
a bucket full, naming the limit, the use and when the window frees a slot.

Registered domains come in as data (`BudgetInput.domains`, computed by the reconciler through
the public suffix list): nothing here reads a file. Used by plan.py, policies/budget.py,
execute.py, reconcile.py, app.py and the ledger adapters.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import AwareDatetime


class Limit(StrEnum):
    """A budget, named as its `[acme.rateLimits]` key."""

    NEW_ORDERS = "newOrdersPer3h"
    PER_DOMAIN = "certificatesPerDomainPerWeek"
    DUPLICATES = "duplicatesPerWeek"
    FAILED_VALIDATIONS = "failedValidationsPerHostPerHour"


WINDOW: Mapping[Limit, timedelta] = {
    Limit.NEW_ORDERS: timedelta(hours=3),
    Limit.PER_DOMAIN: timedelta(days=7),
    Limit.DUPLICATES: timedelta(days=7),
    Limit.FAILED_VALIDATIONS: timedelta(hours=1),
}
LONGEST_WINDOW = max(WINDOW.values())  # the ledger forgets what is older

LETS_ENCRYPT_DIRECTORIES = frozenset({
    "https://acme-v02.api.letsencrypt.org/directory",
    "https://acme-staging-v02.api.letsencrypt.org/directory",
})


@dataclass(frozen=True)
class RateLimits:
    """How many uses each budget allows within its window; None: no limit."""

    values: Mapping[Limit, int] = field(default_factory=dict)

    def get(self, limit: Limit) -> int | None:
        return self.values.get(limit)

    @property
    def any(self) -> bool:
        return bool(self.values)


LETS_ENCRYPT = RateLimits({Limit.NEW_ORDERS: 300, Limit.PER_DOMAIN: 50, Limit.DUPLICATES: 5,
                           Limit.FAILED_VALIDATIONS: 5})


def limits_for(directory_url: str, configured: Mapping[str, int | None]) -> RateLimits:
    """Let's Encrypt's published limits for its directory URLs (production and staging; the
    staging ones are higher, the production ones are kept as the safe side), none for other
    CAs; a configured value (keyed by Limit's value) wins either way."""
    base = LETS_ENCRYPT if directory_url.strip().rstrip("/") in LETS_ENCRYPT_DIRECTORIES \
        else RateLimits()
    values = dict(base.values)
    for limit in Limit:
        value = configured.get(limit.value)
        if value is not None:
            values[limit] = value
    return RateLimits(values)


# -- the ledger's events ------------------------------------------------------------------------


class EventKind(StrEnum):
    ORDER = "order"  # the CA accepted a new order (`issued`: a certificate came of it)
    FAILED_VALIDATION = "failedValidation"  # an authorization went invalid (`names`: the host)
    RATE_LIMITED = "rateLimited"  # the CA answered rateLimited, with a Retry-After (`until`)


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One thing the CA counts. `names` is the order's name set (sorted, lowercased; the host
    for a failed validation), `domains` their registered domains (public suffix list)."""

    kind: EventKind
    at: AwareDatetime
    ca: str  # the ACME directory URL
    account: str  # the account's [acme] email ("" without one)
    names: tuple[str, ...]
    domains: tuple[str, ...] = ()
    issued: bool = False
    until: AwareDatetime | None = None


@dataclass(frozen=True)
class LedgerSnapshot:
    """The events of one CA within the longest window before `at` (oldest first), and the
    rateLimited answers whose Retry-After has not ended."""

    ca: str
    at: datetime
    events: tuple[LedgerEvent, ...] = ()


@dataclass(frozen=True)
class BudgetScope:
    """Whose budget: the CA (its directory URL), the account, and the limits in force."""

    ca: str
    account: str
    limits: RateLimits


def name_set(names: Iterable[str]) -> tuple[str, ...]:
    """The exact name set an order asks for, as the CA compares it: lowercased, sorted."""
    return tuple(sorted({n.lower().rstrip(".") for n in names}))


def host_of(name: str) -> str:
    """The identifier a CA validates for a name: `*.x.test` is validated on `x.test`."""
    name = name.lower().rstrip(".")
    return name[2:] if name.startswith("*.") else name


def order_events(
    scope: BudgetScope,
    names: Iterable[str],
    domains: Iterable[str],
    *,
    at: datetime,
    placed: bool,
    issued: bool,
    failed_hosts: Iterable[str] = (),
    rate_limited_for: float | None = None,
) -> tuple[LedgerEvent, ...]:
    """The events one issue attempt leaves (the executor records them): the order if the CA
    accepted it, each host whose validation failed, a rateLimited answer's Retry-After."""
    ns, ds = name_set(names), tuple(sorted(set(domains)))
    base = LedgerEvent(EventKind.ORDER, at, scope.ca, scope.account, ns, ds, issued=issued)
    out: list[LedgerEvent] = [base] if placed or issued else []
    out += [replace(base, kind=EventKind.FAILED_VALIDATION, names=(host_of(h),), issued=False)
            for h in sorted(set(failed_hosts))]
    if rate_limited_for is not None and rate_limited_for > 0:
        out.append(replace(base, kind=EventKind.RATE_LIMITED, issued=False,
                           until=at + timedelta(seconds=rate_limited_for)))
    return tuple(out)


# -- what plan() reads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetInput:
    """plan()'s `budget=`: the scope, the ledger as the pass began, and the registered domain
    of every desired name (names missing here count as their own registered domain)."""

    scope: BudgetScope
    snapshot: LedgerSnapshot
    domains: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BucketUse:
    """One budget an order would spend from: `used` of `allowed` within the window (the
    ledger's uses plus this pass's earlier orders), and when the oldest counted use that must
    go for one more to fit leaves the window (`frees_at`; None while there is room)."""

    limit: Limit
    key: str  # the account, the registered domain, the name set or the host
    used: int
    allowed: int
    frees_at: datetime | None = None

    @property
    def full(self) -> bool:
        return self.used >= self.allowed


@dataclass(frozen=True)
class OrderBudget:
    """What one order would spend (`uses`, each bucket it counts in) and the registered
    domains a CA's rateLimited answer blocks until its Retry-After ends (`blocked`)."""

    uses: tuple[BucketUse, ...] = ()
    blocked: tuple[tuple[str, datetime], ...] = ()


@dataclass(frozen=True)
class BudgetRemaining:
    """What a limit has left after this pass's orders: for the registered-domain, name-set and
    host limits the least any of them has left (the metric keeps one series per limit)."""

    ca: str
    limit: Limit
    remaining: int
    allowed: int


_COUNTED_BY_ORDERS = (Limit.NEW_ORDERS, Limit.PER_DOMAIN, Limit.DUPLICATES)


class BudgetBook:
    """The buckets of one pass: counted from the snapshot, then spent by each admitted order.

    Local to one plan() call (plan.py builds one per pass); no I/O. Bucket times are kept
    sorted, so the instant a full bucket frees a slot is a lookup.
    """

    def __init__(self, budget: BudgetInput, now: datetime) -> None:
        self.scope = budget.scope
        self.now = now
        self._domains = budget.domains
        self._times: dict[tuple[Limit, str], list[datetime]] = {}
        self._blocked: dict[str, datetime] = {}
        limits = self.scope.limits
        for e in budget.snapshot.events:
            if e.ca != self.scope.ca:
                continue
            if e.kind is EventKind.RATE_LIMITED:
                if e.until is not None and e.until > now:
                    for d in e.domains:
                        self._blocked[d] = max(e.until, self._blocked.get(d, e.until))
                continue
            if e.kind is EventKind.FAILED_VALIDATION:
                if e.account == self.scope.account:
                    for host in e.names:
                        self._count(Limit.FAILED_VALIDATIONS, host, e.at)
                continue
            if e.account == self.scope.account:
                self._count(Limit.NEW_ORDERS, self.scope.account, e.at)
            if e.issued:  # these two count certificates, whoever's account asked
                for d in e.domains:
                    self._count(Limit.PER_DOMAIN, d, e.at)
                self._count(Limit.DUPLICATES, ",".join(e.names), e.at)
        for times in self._times.values():
            times.sort()
        self._limits = {lim: n for lim in Limit if (n := limits.get(lim)) is not None}

    def _count(self, limit: Limit, key: str, at: datetime) -> None:
        if self.scope.limits.get(limit) is None or at <= self.now - WINDOW[limit]:
            return
        self._times.setdefault((limit, key), []).append(at)

    def domains_of(self, names: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted({self._domains.get(h, h) for h in map(host_of, names)}))

    def _keys(self, names: tuple[str, ...]) -> list[tuple[Limit, str]]:
        keys = [(Limit.NEW_ORDERS, self.scope.account)]
        keys += [(Limit.PER_DOMAIN, d) for d in self.domains_of(names)]
        keys.append((Limit.DUPLICATES, ",".join(name_set(names))))
        keys += [(Limit.FAILED_VALIDATIONS, h) for h in sorted({host_of(n) for n in names})]
        return [k for k in keys if k[0] in self._limits]

    def for_order(self, names: Iterable[str]) -> OrderBudget:
        """What an order for `names` would spend now (after the orders spent so far)."""
        ns = tuple(names)
        uses = []
        for limit, key in self._keys(ns):
            times = self._times.get((limit, key), [])
            allowed = self._limits[limit]
            frees = (times[len(times) - allowed] + WINDOW[limit]
                     if len(times) >= allowed else None)
            uses.append(BucketUse(limit, key, len(times), allowed, frees))
        blocked = tuple((d, self._blocked[d]) for d in self.domains_of(ns) if d in self._blocked)
        return OrderBudget(tuple(uses), blocked)

    def spend(self, names: Iterable[str]) -> None:
        """An order for `names` was admitted: it counts now (failed validations are only
        counted once the CA reports them)."""
        for limit, key in self._keys(tuple(names)):
            if limit in _COUNTED_BY_ORDERS:
                insort(self._times.setdefault((limit, key), []), self.now)

    def remaining(self) -> tuple[BudgetRemaining, ...]:
        """Per configured limit, what is left (the least across its buckets)."""
        out = []
        for limit, allowed in self._limits.items():
            used = [len(t) for (lim, _), t in self._times.items() if lim is limit]
            out.append(BudgetRemaining(self.scope.ca, limit, max(0, allowed - max(used, default=0)),
                                       allowed))
        return tuple(out)
