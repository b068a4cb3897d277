"""Plan → human `diff` text or JSON (for `diff -o json` and GET /api/v1/plan). Pure.

An issue or renew whose first name is too long to be the CN (over 64 characters) says which
CN is asked for instead: ` cn=<name>` (the first name that fits) or ` cn=(none)`; the JSON has
`common_name` on every issue and renew. A certificate whose `[certificates."name"]` table picks
another challenge type than [acme]'s says so: ` challenge=tls` (JSON: `challenge_type`, null
for the [acme] one), one with its own profile ` profile=<name>` (JSON: `profile`), and a
renewal that keeps the stored key (reuseKey) ` reuse-key` (JSON: `reuse_key`); an order that
starts at a `[[acme.fallback]]` CA (the earlier ones keep failing for it) ` ca=<directory URL>`
(JSON: `ca`, null for [acme]'s). The second certificate of a dual block says where it is
stored: ` store=<name>@<slot>` (JSON: `domain` is that store key, as on every line, and `slot`
its slot; null for a block's first certificate).
`renewal_rows` / `renewals_to_text` / `renewals_to_list`: when each certificate renews and from
which rule (the CA's ARI window with its explanation URL, the lifetime rule, the emergency
override), for `diff` (due within 7 days; `-v`: all) and `diff -o json` (`renewals`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.certinfo import csr_common_name
from controller.model import Desired, Observed
from controller.plan import Action, Plan
from controller.policies.renewal import (
    EMERGENCY_RULE,
    LIFETIME_RULE,
    RenewalChoice,
    renewal_choice,
)
from controller.policies.subject import PolicySettings
from controller.status import RENEWAL_SOURCE_ARI, CertStatus

_SIGIL = {"issue": "+", "renew": "~", "apply": ">", "delete": "-"}


def plan_to_dict(p: Plan, *, now: datetime | None = None) -> dict[str, Any]:
    return {
        "in_sync": p.in_sync,
        "generated_at": now.isoformat() if now else None,
        "actions": [
            {
                "kind": a.kind.value,
                "domain": a.domain,
                "reason": a.reason.value,
                "message": a.message,
                "names": list(a.spec.names) if a.spec else None,
                "key_type": a.key_type.value if a.key_type else None,
                "listens": [t.listens[0] for t in a.targets] or None,
                "common_name": (csr_common_name(a.spec.names)
                                if a.spec is not None and _orders(a) else None),
                "challenge_type": (a.spec.challenge_type.value
                                   if a.spec and a.spec.challenge_type and _orders(a) else None),
                "profile": a.spec.profile if a.spec and _orders(a) else None,
                "reuse_key": a.reuse_key,
                "ca": a.ca,  # an order starting at a [[acme.fallback]] CA: its directory URL
                "slot": a.spec.slot if a.spec else None,  # a dual block's second certificate
            }
            for a in p.actions
        ],
        "waiting": [
            {
                "domain": w.domain,
                "reason": w.reason.value,
                "message": w.message,
                "until": w.until.isoformat() if w.until else None,
            }
            for w in p.waiting
        ],
        "scheduled": [
            {
                "domain": s.domain,
                "reason": s.reason.value,
                "message": s.message,
                "at": s.at.isoformat() if s.at else None,
            }
            for s in p.scheduled
        ],
        "warnings": [
            {"name": w.name, "reason": w.reason, "origin": w.origin} for w in p.warnings
        ]
        + [{"name": None, "reason": n, "origin": None} for n in p.notes],
    }


def _orders(a: Action) -> bool:
    return a.kind.value in ("issue", "renew")


def plan_to_text(p: Plan) -> str:
    lines: list[str] = []
    for a in p.actions:
        names = " ".join(a.spec.names) if a.spec else a.domain
        extra = f" key={a.key_type}" if a.key_type and _orders(a) else ""
        if _orders(a) and a.spec and (cn := csr_common_name(a.spec.names)) != a.spec.names[0]:
            extra += f" cn={cn or '(none)'}"
        if _orders(a) and a.spec and a.spec.challenge_type:
            extra += f" challenge={a.spec.challenge_type.value}"
        if _orders(a) and a.spec and a.spec.profile:
            extra += f" profile={a.spec.profile}"
        if a.reuse_key:
            extra += " reuse-key"
        if a.ca:
            extra += f" ca={a.ca}"
        if a.spec and a.spec.slot:
            extra += f" store={a.domain}"
        lines.append(f"{_SIGIL[a.kind.value]} {a.kind.value:<6} {names}{extra}  "
                     f"[{a.reason.value}] {a.message}")
    for w in p.waiting:
        until = f" until {w.until.isoformat()}" if w.until else ""
        lines.append(f"! wait   {w.domain}  [{w.reason.value}] {w.message}{until}")
    for s in p.scheduled:
        at = f" at {s.at.isoformat()}" if s.at else ""
        lines.append(f"  later  {s.domain}  [{s.reason.value}] {s.message}{at}")
    for nw in p.warnings:
        lines.append(f"warning: {nw.origin}: {nw.name or '(empty)'!s}: {nw.reason}")
    for n in p.notes:
        lines.append(f"warning: {n}")
    if p.in_sync:
        lines.insert(0, "in sync: nothing to do")
    return "\n".join(lines)


# -- when each certificate renews (`diff`: those due within DUE_SOON; `diff -v`: all) --------------

DUE_SOON = timedelta(days=7)


@dataclass(frozen=True)
class RenewalRow:
    """One desired, stored certificate's next renewal and the rule that set it."""

    domain: str
    choice: RenewalChoice
    not_after: datetime


def renewal_rows(desired: Desired, observed: Observed, statuses: Mapping[str, CertStatus],
                 settings: PolicySettings, now: datetime, *,
                 everything: bool = False) -> list[RenewalRow]:
    """The desired certificates with a stored pair that renew within DUE_SOON of `now` (all of
    them with `everything`), by name."""
    rows = []
    for domain in sorted(set(desired.specs) & set(observed.stored)):
        stored = observed.stored[domain]
        choice = renewal_choice(stored, statuses.get(domain), settings.renew_before,
                                ari=settings.ari)
        if everything or choice.at <= now + DUE_SOON:
            rows.append(RenewalRow(domain, choice, stored.info.not_after))
    return rows


def _source(c: RenewalChoice) -> str:
    return {RENEWAL_SOURCE_ARI: "ARI", LIFETIME_RULE: "lifetime rule",
            EMERGENCY_RULE: "emergency rule"}.get(c.source, c.source)


def renewals_to_text(rows: list[RenewalRow]) -> list[str]:
    """`  renews NAME at TIME from SOURCE (...)` lines: the ARI window and its explanation
    when the CA gave one, the expiry otherwise."""
    lines = []
    for r in rows:
        c = r.choice
        if c.window_start is not None and c.window_end is not None:
            detail = f"ARI window {c.window_start.isoformat()} .. {c.window_end.isoformat()}"
        else:
            detail = f"expires {r.not_after.isoformat()}"
        if c.source == EMERGENCY_RULE:
            detail += "; less than a tenth of the lifetime would be left at the chosen time"
        if c.explanation_url:
            detail += f"; explanation {c.explanation_url}"
        lines.append(f"  renews {r.domain} at {c.at.isoformat()} from {_source(c)} ({detail})")
    return lines


def renewals_to_list(rows: list[RenewalRow]) -> list[dict[str, Any]]:
    """The rows for `diff -o json` (`renewals`): `source` is "ari", "lifetime", "emergency" or
    "chosen"."""
    return [
        {
            "domain": r.domain,
            "at": r.choice.at.isoformat(),
            "source": r.choice.source,
            "window_start": (r.choice.window_start.isoformat()
                             if r.choice.window_start else None),
            "window_end": r.choice.window_end.isoformat() if r.choice.window_end else None,
            "explanation_url": r.choice.explanation_url,
            "not_after": r.not_after.isoformat(),
        }
        for r in rows
    ]
