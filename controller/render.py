"""Plan → human `diff` text or JSON (for `diff -o json` and GET /api/v1/plan). Pure.

An issue or renew whose first name is too long to be the CN (over 64 characters) says which
CN is asked for instead: ` cn=<name>` (the first name that fits) or ` cn=(none)`; the JSON has
`common_name` on every issue and renew. A certificate whose `[certificates."name"]` table picks
another challenge type than [acme]'s says so: ` challenge=tls` (JSON: `challenge_type`, null
for the [acme] one), and one with its own profile ` profile=<name>` (JSON: `profile`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.certinfo import csr_common_name
from controller.plan import Action, Plan

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
