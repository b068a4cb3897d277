"""`certs show NAME [-o table|wide|json|yaml]`: one certificate as an operator wants it.

The spec (names, key type and where it comes from, challenge, profile, source and origin), the
conditions Ready and Issuing (fold.py sets them after each pass, the status file keeps them),
the stored certificate (or why its files cannot be used), what NJet serves on each listen (a
TLS handshake per listen of the running block; store-only mode asks and probes nothing), the
next renewal and why then (policies/renewal.py), what the plan has pending for it, and its
last events from the event log. Reads only (the App is read-only); 0 shown, 1 neither desired
nor stored. Composition layer: cli_certs.dispatch calls `cmd_show`.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from controller.cli_output import Colour, days_text, emit, fail, short, table, when_text
from controller.model import CertificateSpec, KeyKind, KeyType, StoredCert
from controller.policies.renewal import (
    EMERGENCY_RULE,
    LIFETIME_RULE,
    SHORT_LIFETIME,
    renewal_choice,
    renewal_window,
)
from controller.status import ISSUING, READY, CertStatus

if TYPE_CHECKING:
    from controller.app import App
    from controller.reconcile import PassResult

SHOW_EVENTS = 10  # events `certs show` prints


def renewal_why(stored: StoredCert, status: CertStatus | None,
                renew_before: timedelta) -> tuple[datetime, str]:
    """The next renewal of `stored` (policies/renewal.py's renewal_time) and why it is then."""
    info = stored.info
    lifetime = info.not_after - info.not_before
    choice = renewal_choice(stored, status, renew_before)
    at = choice.at
    if status is not None and status.renewal_at is not None and choice.source != LIFETIME_RULE:
        if choice.source == EMERGENCY_RULE:
            return at, (f"the chosen renewal time {status.renewal_at.isoformat()} leaves less "
                        "than a tenth of the lifetime: renewed at that tenth instead")
        if choice.window_start is not None and choice.window_end is not None:
            return at, (f"chosen inside the CA's ARI window {choice.window_start.isoformat()}"
                        f" .. {choice.window_end.isoformat()}" + (
                            f" (explanation: {choice.explanation_url})"
                            if choice.explanation_url else ""))
        return at, "the renewal time chosen for this certificate (kept in its status file)"
    window = renewal_window(lifetime, renew_before)
    share = "1/2" if lifetime < SHORT_LIFETIME else "1/3"
    if window == renew_before:
        why = (f"{days_text(window)} before notAfter: [acme] renewBeforeDays "
               f"({days_text(window)}) is less than {share} of the {days_text(lifetime)} "
               "lifetime")
    else:
        why = (f"{days_text(window)} before notAfter: {share} of the {days_text(lifetime)} "
               f"lifetime, less than [acme] renewBeforeDays ({days_text(renew_before)})")
    return at, why


def _spec_doc(spec: CertificateSpec, app: App, result: PassResult) -> dict[str, Any]:
    from controller.plan import wanted_key_type

    cfg = app.config
    key = wanted_key_type(spec, result.observed.bootstrap_key_types, app.reconciler.settings)
    challenge = spec.challenge_type or cfg.acme.challengeType
    return {
        "names": list(spec.names),
        "key_type": key.value,
        "key_type_from": "config" if spec.key_type is not None else (
            "bootstrap certificate" if spec.key in result.observed.bootstrap_key_types
            else "default"),
        "challenge_type": f"{challenge.value}-01" if challenge.value == "http"
        else "tls-alpn-01",
        "profile": spec.profile or cfg.acme.profile.strip() or None,
        "source": spec.source.value,
        "origin": spec.origin or None,
        "listens": list(spec.listens),
    }


async def _served(app: App, spec: CertificateSpec, key_kind: KeyKind,
                  result: PassResult) -> list[dict[str, Any]]:
    """One TLS handshake per listen of the name's running block(s), as NJet lists them."""
    from controller.app import tls_probe

    if app.njet is None:
        return []
    if result.observed.njet_error:
        return [{"listen": None, "fingerprint": None, "error": result.observed.njet_error}]
    listens = [listen for t in result.observed.njet_targets.get(spec.key, ())
               for listen in t.listens]
    timeout = app.config.controller.probeTimeout.total_seconds()
    probes = await asyncio.gather(*(
        tls_probe(listen=listen, sni=spec.names[0], key_kind=key_kind, timeout=timeout)
        for listen in listens))
    return [{"listen": listen, "fingerprint": p.fingerprint, "error": p.error}
            for listen, p in zip(listens, probes, strict=True)]


def _pending(result: PassResult, domain: str) -> list[dict[str, Any]]:
    p = result.plan
    out: list[dict[str, Any]] = [
        {"kind": a.kind.value, "reason": a.reason.value, "message": a.message}
        for a in p.actions if a.domain == domain]
    out += [{"kind": "wait", "reason": w.reason.value, "message": w.message, "until": w.until}
            for w in p.waiting if w.domain == domain]
    out += [{"kind": "scheduled", "reason": s.reason.value, "message": s.message, "at": s.at}
            for s in p.scheduled if s.domain == domain]
    return out


async def show_doc(app: App, domain: str) -> dict[str, Any] | None:
    """What `certs show` prints of `domain`; None when it is neither desired nor stored."""
    from controller.adapters.store.events import EventLog

    result = await app.reconciler.compute(probe=False)
    spec = result.desired.specs.get(domain)
    stored = result.observed.stored.get(domain)
    problem = result.observed.problems.get(domain)
    status = app.reconciler.statuses.get(domain)
    if spec is None and stored is None and problem is None and status is None:
        return None
    now = app.reconciler.clock()
    doc: dict[str, Any] = {"name": domain, "desired": spec is not None,
                           "spec": _spec_doc(spec, app, result) if spec else None,
                           "conditions": list(status.conditions) if status else []}
    info = stored.info if stored else None
    doc["certificate"] = None if info is None else {
        "names": list(info.names), "common_name": info.common_name, "serial": info.serial,
        "fingerprint": info.fingerprint, "issuer": info.issuer, "key_type":
        info.key_type.value if info.key_type else None, "not_before": info.not_before,
        "not_after": info.not_after,
        "days_left": round((info.not_after - now).total_seconds() / 86400, 1)}
    doc["problem"] = problem
    served = [] if spec is None else await _served(
        app, spec, KeyType(doc["spec"]["key_type"]).njet_cert_type, result)
    for s in served:
        s["matches_stored"] = info is not None and s["fingerprint"] == info.fingerprint
    doc["served"] = served
    doc["store_only"] = app.config.store_only
    doc["applied"] = ({"fingerprint": status.applied_fingerprint, "at": status.applied_at}
                      if status and status.applied_fingerprint else None)
    if stored is not None:
        at, why = renewal_why(stored, status, app.reconciler.settings.renew_before)
        doc["renewal"] = {"at": at, "in": days_text(at - now), "why": why}
    else:
        doc["renewal"] = None
    doc["pending"] = _pending(result, domain)
    doc["status"] = None if status is None else {
        "attempts": status.attempts, "last_failure": status.last_failure,
        "last_failure_at": status.last_failure_at, "backoff_until": status.backoff_until,
        "force_renew": status.force_renew, "issued_at": status.issued_at,
        "last_success_at": status.last_success_at, "orphaned_at": status.orphaned_at}
    doc["events"] = await asyncio.to_thread(EventLog(app.paths).recent, SHOW_EVENTS,
                                            domain=domain)
    return doc


async def cmd_show(app: App, name: str, output: str) -> int:
    from controller.paths import validate_store_key

    domain = validate_store_key(name)  # a dual block's second certificate: <name>@<slot>
    doc = await show_doc(app, domain)
    if doc is None:
        return fail(f"{domain} is neither a desired certificate nor in the store "
                     "(`certs list` shows what is stored)")
    emit(doc, output, lambda wide: print_show(orjson.loads(orjson.dumps(doc)), wide=wide))
    return 0


def print_show(doc: dict[str, Any], *, wide: bool) -> None:
    """`certs show`'s table and wide output (`doc` as JSON types)."""
    c = Colour.for_stream(sys.stdout)
    width = 10_000 if wide else 72

    def section(title: str) -> None:
        print(f"\n{c('bold', title)}")

    def field(label: str, value: object) -> None:
        print(f"  {label + ':':<16}{'-' if value in (None, '', []) else value}")

    print(f"{c('bold', 'Name:')} {doc['name']}" + ("" if doc["desired"] else
                                                    c("yellow", "  (not desired)")))
    spec = doc["spec"]
    if spec:
        section("Spec")
        field("Names", ", ".join(spec["names"]))
        field("Key type", f"{spec['key_type']} (from the {spec['key_type_from']})")
        field("Challenge", spec["challenge_type"])
        field("Profile", spec["profile"])
        field("Source", spec["source"] + (f" at {spec['origin']}" if spec["origin"] else ""))
        field("Listens", ", ".join(spec["listens"]))
    section("Conditions")
    rows = [["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]]
    rows += [[k["type"], k["status"], k["reason"], when_text(k["last_transition"]),
              short(k["message"], width)] for k in doc["conditions"]]
    if len(rows) == 1:
        print("  none yet (set by the next reconcile pass)")
    else:
        good = {READY: "True", ISSUING: "False"}
        kinds = [k["type"] for k in doc["conditions"]]
        for row, kind in zip(rows[1:], kinds, strict=True):
            row[1] = c.state(row[1], row[1] == good.get(kind, "True"))
        table(rows, colour=c, indent="  ")
    cert = doc["certificate"]
    section("Certificate")
    if doc["problem"]:
        print(f"  {c('red', 'unusable:')} {doc['problem']}")
    if cert:
        field("Serial", cert["serial"])
        fp = cert["fingerprint"]
        field("Fingerprint", f"sha256 {fp if wide else fp[:16] + '…'}")
        field("Issuer", cert["issuer"])
        field("Not before", when_text(cert["not_before"]))
        left = cert["days_left"]
        shown = c.state(f"{left:g}d left", left >= 7)
        field("Not after", f"{when_text(cert['not_after'])} ({shown})")
    elif not doc["problem"]:
        print("  nothing stored")
    section("Served")
    if doc["store_only"]:
        print("  store-only mode ([njet] apiAddress = \"\"): NJet is not asked or probed")
    for s in doc["served"]:
        if s["fingerprint"]:
            same = c.state("= stored" if s["matches_stored"] else "≠ stored",
                           s["matches_stored"])
            fp = s["fingerprint"] if wide else s["fingerprint"][:16] + "…"
            print(f"  {s['listen']}  sha256 {fp} ({same})")
        else:
            print(f"  {s['listen'] or 'NJet'}  {c('red', 'no certificate')}: {s['error']}")
    if not doc["store_only"] and not doc["served"]:
        print("  no running NJet block for this name")
    if doc["applied"]:
        field("Verified", f"{when_text(doc['applied']['at'])} (the last apply a handshake proved)")
    section("Renewal")
    if doc["renewal"]:
        field("Next", f"{when_text(doc['renewal']['at'])} (in {doc['renewal']['in']})")
        field("Why", doc["renewal"]["why"])
    else:
        print("  nothing stored to renew")
    status = doc["status"]
    if status and (status["attempts"] or wide):
        field("Attempts", status["attempts"])
        field("Last failure", status["last_failure"] and short(status["last_failure"], width))
        field("Backoff until", when_text(status["backoff_until"]))
    section("Pending")
    for p in doc["pending"]:
        when = p.get("until") or p.get("at")
        print(f"  {p['kind']} [{c('yellow', p['reason'])}] {short(p['message'], width)}"
              + (f" (until {when_text(when)})" if when else ""))
    if not doc["pending"]:
        print(f"  {c('green', 'nothing')}: in sync")
    section("Events")
    rows = [["TIME", "BY", "ACTION", "RESULT", "DETAIL"]]
    rows += [[when_text(e.get("ts")), e.get("kind", ""), e.get("action", ""), e.get("result", ""),
              short(" ".join(x for x in (e.get("reason") and f"[{e['reason']}]",
                                         e.get("detail")) if x), width)]
             for e in doc["events"]]
    if len(rows) == 1:
        print("  none")
    else:
        table(rows, colour=c, indent="  ", styles=[None, None, None, lambda s: c.state(
            s, None if s == "skipped" else s not in ("failed", "refused"))])
