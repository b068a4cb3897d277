"""The operator commands modelled on cmctl's: `certs list|show|delete` and `status`.

- `certs list [-o table|wide|json|yaml]`: the stored certificates (and the unusable pairs).
- `certs show NAME [-o ...]`: the spec (names, key type, challenge, source and origin), the
  conditions Ready and Issuing (fold.py sets them, the status file keeps them), the stored
  certificate, what NJet serves on each listen (a TLS handshake per listen; store-only mode
  serves nothing), the next renewal and why, what the plan has pending, and the last events
  of the name from the event log. 0 shown, 1 neither desired nor stored.
- `certs delete NAME [--revoke]`: the pair into quarantine/ (`--revoke`: revoked at the CA
  first, nothing deleted when that fails); through the running controller's admin API
  (DELETE, `?revoke=true`) when one holds the store lock, else here under the lock, written
  to the event log. 0 deleted, 1 nothing stored or an error.
- `status [-o ...]`: a running controller's `/healthz` (address and token from the config)
  when one holds the store lock, else what the store says: certificates, problems, the
  soonest expiry, the Ready conditions. 0 ok, 1 not ok (degraded, stopping, unusable or
  expired pairs, an unreachable controller).
Output goes through cli_output.py (colour on a terminal only, never with NO_COLOR).
Composition layer: cli.py parses the arguments and calls `dispatch`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from controller.cli_output import Colour, emit, short, table
from controller.model import CertificateSpec, KeyKind, KeyType, StoredCert
from controller.policies.renewal import SHORT_LIFETIME, renewal_time, renewal_window
from controller.status import ISSUING, READY, CertStatus

if TYPE_CHECKING:
    from controller.app import App
    from controller.config import Config
    from controller.reconcile import PassResult

SHOW_EVENTS = 10  # events `certs show` prints
ADMIN_TIMEOUT = 30.0  # seconds a call to the running controller's admin API may take


async def dispatch(app: App, args: argparse.Namespace) -> int:
    """`status`, `certs list|show|delete` (cli.py parsed the arguments)."""
    if args.command == "status":
        return await cmd_status(app, args.output)
    if args.certs_command == "show":
        return await cmd_show(app, args.name, args.output)
    if args.certs_command == "delete":
        return await cmd_delete(app, args.name, revoke=args.revoke)
    return cmd_list(app, args.output)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f}d" if abs(days) >= 1 else f"{delta.total_seconds() / 3600:.1f}h"


# -- certs list ---------------------------------------------------------------------------------


def cmd_list(app: App, output: str) -> int:
    stored, problems = app.store.load_all()
    now = app.reconciler.clock()
    rows: list[dict[str, Any]] = []
    for domain in sorted(stored):
        info = stored[domain].info
        rows.append({
            "domain": domain,
            "names": list(info.names),
            "subject_cn": info.common_name,
            "not_after": info.not_after.isoformat(),
            "days_left": round((info.not_after - now).total_seconds() / 86400, 1),
            "key_type": info.key_type.value if info.key_type else "unknown",
            "serial": info.serial,
            "issuer": info.issuer,
        })
    doc = {"certificates": rows, "problems": dict(problems)}

    def text(wide: bool) -> None:
        c = Colour.for_stream(sys.stdout)
        cols = ["domain", "names", "not_after", "days_left", "key_type", "serial"]
        if wide:
            cols += ["subject_cn", "issuer"]
        grid = [[col.upper() for col in cols]]
        grid += [[_cell(r[col]) for col in cols] for r in rows]
        for domain in sorted(problems):  # a row too, so an unusable pair is not missed
            grid.append([domain, "-", "UNUSABLE", *["-"] * (len(cols) - 3)])

        def left(cell: str) -> str:
            try:
                return c.state(cell, float(cell) >= 7)
            except ValueError:
                return cell

        styles = [None, None, lambda s: c("red", s) if s == "UNUSABLE" else s, left]
        table(grid, colour=c, styles=styles)
        for domain, why in sorted(problems.items()):
            print(f"{c('red', 'problem:')} {domain}: {why} (a desired name's pair is "
                  "quarantined and reissued by the next reconcile)")

    emit(doc, output, text)
    return 0


def _cell(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


# -- certs show ---------------------------------------------------------------------------------


def renewal_why(stored: StoredCert, status: CertStatus | None,
                renew_before: timedelta) -> tuple[datetime, str]:
    """The next renewal of `stored` (policies/renewal.py's renewal_time) and why it is then."""
    info = stored.info
    lifetime = info.not_after - info.not_before
    at = renewal_time(stored, status, renew_before)
    if status is not None and status.renewal_at is not None:
        if at < status.renewal_at:
            return at, (f"the chosen renewal time {status.renewal_at.isoformat()} leaves less "
                        "than a tenth of the lifetime: renewed at that tenth instead")
        return at, "the renewal time chosen for this certificate (kept in its status file)"
    window = renewal_window(lifetime, renew_before)
    share = "1/2" if lifetime < SHORT_LIFETIME else "1/3"
    if window == renew_before:
        why = (f"{_days(window)} before notAfter: [acme] renewBeforeDays ({_days(window)}) is "
               f"less than {share} of the {_days(lifetime)} lifetime")
    else:
        why = (f"{_days(window)} before notAfter: {share} of the {_days(lifetime)} lifetime, "
               f"less than [acme] renewBeforeDays ({_days(renew_before)})")
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
            "bootstrap certificate" if spec.domain in result.observed.bootstrap_key_types
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
    listens = [listen for t in result.observed.njet_targets.get(spec.domain, ())
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
        doc["renewal"] = {"at": at, "in": _days(at - now), "why": why}
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
    from controller.paths import validate_domain

    domain = validate_domain(name)
    doc = await show_doc(app, domain)
    if doc is None:
        return _fail(f"{domain} is neither a desired certificate nor in the store "
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
        print(f"  {label + ':':<14}{'-' if value in (None, '', []) else value}")

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
    rows += [[k["type"], k["status"], k["reason"], k["last_transition"],
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
        field("Not before", cert["not_before"])
        left = cert["days_left"]
        field("Not after", f"{cert['not_after']} ({c.state(f'{left}d left', left >= 7)})")
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
        field("Verified", f"{doc['applied']['at']} (the last apply proved by a handshake)")
    section("Renewal")
    if doc["renewal"]:
        field("Next", f"{doc['renewal']['at']} (in {doc['renewal']['in']})")
        field("Why", doc["renewal"]["why"])
    else:
        print("  nothing stored to renew")
    status = doc["status"]
    if status and (status["attempts"] or wide):
        field("Attempts", status["attempts"])
        field("Last failure", status["last_failure"] and short(status["last_failure"], width))
        field("Backoff until", status["backoff_until"])
    section("Pending")
    for p in doc["pending"]:
        when = p.get("until") or p.get("at")
        print(f"  {p['kind']} [{c('yellow', p['reason'])}] {short(p['message'], width)}"
              + (f" (until {when})" if when else ""))
    if not doc["pending"]:
        print(f"  {c('green', 'nothing')}: in sync")
    section("Events")
    rows = [["TIME", "BY", "ACTION", "RESULT", "DETAIL"]]
    rows += [[e.get("ts", ""), e.get("kind", ""), e.get("action", ""), e.get("result", ""),
              short(" ".join(x for x in (e.get("reason") and f"[{e['reason']}]",
                                         e.get("detail")) if x), width)]
             for e in doc["events"]]
    if len(rows) == 1:
        print("  none")
    else:
        table(rows, colour=c, indent="  ", styles=[None, None, None, lambda s: c.state(
            s, None if s == "skipped" else s not in ("failed", "refused"))])


# -- certs delete -------------------------------------------------------------------------------


async def cmd_delete(app: App, name: str, *, revoke: bool) -> int:
    from controller.adapters.store.events import EventLog, cli_peer
    from controller.adapters.store.lock import StoreLock
    from controller.admin_backend import record_event, revoke_stored
    from controller.errors import ControllerError
    from controller.paths import validate_domain

    domain = validate_domain(name)
    lock = StoreLock(app.paths)
    if not lock.try_acquire():
        return await _delete_through_admin(app.config, domain, revoke=revoke,
                                           holder=lock.holder())
    events = EventLog(app.paths)
    try:
        try:
            revoked = revoke and await revoke_stored(app.store, app.issuer, domain,
                                                     now=app.reconciler.clock())
            where = await asyncio.to_thread(app.store.quarantine, domain)
        except ControllerError as exc:
            record_event(events, kind="cli", peer=cli_peer(), action="delete", domain=domain,
                         result="failed", detail=str(exc))
            raise
        record_event(events, kind="cli", peer=cli_peer(), action="delete", domain=domain,
                     result="quarantined" if where else "not found",
                     detail=("revoked, " if revoked else "") + (where or "nothing stored"))
        desired = domain in (await app.reconciler.desired_async(keep_last_good=True)).specs
    finally:
        lock.release()
    if where is None:
        return _fail(f"no certificate for {domain} in the store")
    said = "revoked at the CA and moved" if revoked else "moved"
    print(f"{domain}: {said} to {where}")
    if revoke and not revoked:
        print(f"{domain}: not revoked: it has expired")
    if desired:
        print(f"{domain} is still desired: the next `run` or `reconcile` issues a new one")
    return 0


async def _delete_through_admin(cfg: Config, domain: str, *, revoke: bool, holder: str) -> int:
    query = "?revoke=true" if revoke else ""
    got = await admin_call(cfg, "DELETE", f"/api/v1/cert/{domain}{query}", holder=holder)
    if got is None:
        return 1
    status, doc = got
    if status != 200:
        return _fail(str(doc.get("error") or f"HTTP {status} from the admin API"))
    said = "revoked at the CA and moved" if doc.get("revoked") else "moved"
    print(f"{domain}: {said} to {doc.get('quarantined_to', 'quarantine/')} (the running "
          f"controller, {holder})")
    if doc.get("message"):
        print(doc["message"])
    return 0


async def admin_call(cfg: Config, method: str, path: str, *,
                     holder: str) -> tuple[int, dict[str, Any]] | None:
    """One call to the running controller's admin API (`[admin] address`, its token): the
    status and the JSON answer, or None after saying on stderr that it does not answer."""
    import aiohttp

    from controller.adapters.admin.server import parse_listen_address

    host, port = parse_listen_address(cfg.admin.address)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = {"Authorization": f"Bearer {cfg.admin.token}"} if cfg.admin.token else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ADMIN_TIMEOUT)) as s, \
                s.request(method, f"http://{netloc}{path}", headers=headers) as response:
            status, text = response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        _fail(f"{holder} holds the store lock but its admin API at {netloc} does not answer "
              f"({type(exc).__name__}: {exc}); retry once it is done")
        return None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = {}
    return status, doc if isinstance(doc, dict) else {}


# -- status -------------------------------------------------------------------------------------


async def cmd_status(app: App, output: str) -> int:
    from controller.adapters.store.lock import StoreLock

    lock = StoreLock(app.paths)
    if lock.try_acquire():
        lock.release()
        doc = store_status(app)
    else:
        got = await admin_call(app.config, "GET", "/healthz", holder=lock.holder())
        if got is None:
            return 1
        code, health = got
        doc = {"source": "controller", "admin": app.config.admin.address, **health}
        if "ok" not in health:
            return _fail(f"the admin API answered HTTP {code} without a health document")
    emit(doc, output, lambda wide: _print_status(doc, wide=wide))
    return 0 if doc.get("ok") else 1


def store_status(app: App) -> dict[str, Any]:
    """What the store says with no controller running: counts, problems, the soonest expiry."""
    stored, problems = app.store.load_all()
    statuses = app.status_files.load_all()
    now = app.reconciler.clock()
    soonest = min(stored.values(), key=lambda s: s.info.not_after, default=None)
    expired = sorted(d for d, s in stored.items() if s.info.not_after <= now)
    ready = [s.condition(READY) for s in statuses.values()]
    return {
        "source": "store",
        "ok": not problems and not expired,
        "time": now,
        "store": str(app.paths.lego),
        "certificates": len(stored),
        "problem_count": len(problems),
        "problems": [{"domain": d, "reason": why} for d, why in sorted(problems.items())],
        "expired": expired,
        "soonest_expiry": None if soonest is None else {
            "domain": soonest.domain, "not_after": soonest.info.not_after,
            "days_left": round((soonest.info.not_after - now).total_seconds() / 86400, 1)},
        "ready": sum(1 for r in ready if r is not None and r.true),
        "not_ready": sorted(d for d, s in statuses.items()
                            if (r := s.condition(READY)) is not None and not r.true),
        "quarantined": len(app.quarantine.entries()),
    }


def _print_status(doc: dict[str, Any], *, wide: bool) -> None:
    c = Colour.for_stream(sys.stdout)
    plain = orjson.loads(orjson.dumps(doc))
    state = plain.get("status") or ("ok" if plain.get("ok") else "degraded")
    if plain["source"] == "controller":
        print(f"{c('bold', 'controller')} pid {plain.get('pid', '?')} on {plain['admin']}: "
              f"{c.state(state, plain.get('ok'))}")
        keys = ["time", "reconciles", "in_sync", "mqtt_connected", "problem_count", "gc_hold",
                "last_error"]
    else:
        print(f"{c('bold', 'store')} {plain['store']} (no controller running): "
              f"{c.state(state, plain['ok'])}")
        keys = ["certificates", "ready", "not_ready", "problem_count", "expired",
                "soonest_expiry", "quarantined"]
        soon = plain["soonest_expiry"]
        if soon:
            plain["soonest_expiry"] = (f"{soon['domain']} {soon['not_after']} "
                                       f"({soon['days_left']}d left)")
    if wide:
        keys += [k for k in plain if k not in keys and k not in ("source", "ok", "status",
                                                                 "admin", "store", "problems")]
    for key in keys:
        if key in plain:
            value = plain[key]
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            print(f"  {key + ':':<16}{'-' if shown in (None, '', []) else shown}")
    for p in plain.get("problems") or []:
        print(f"  {c('red', 'problem:')} {p['domain']}: {p['reason']}")
