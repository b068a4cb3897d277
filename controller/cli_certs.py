"""The operator commands modelled on cmctl's: `certs list|show|delete` and `status`.

- `certs list [-o table|wide|json|yaml]`: the stored certificates (and the unusable pairs);
  `wide` and `json` add the CA that issued each one (`ca`: its directory URL, from the status).
- `certs show NAME [-o ...]`: in cli_show.py.
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
from typing import TYPE_CHECKING, Any

import orjson

from controller.cli_output import Colour, emit, fail, table
from controller.status import READY

if TYPE_CHECKING:
    from controller.app import App
    from controller.config import Config

ADMIN_TIMEOUT = 30.0  # seconds a call to the running controller's admin API may take


async def dispatch(app: App, args: argparse.Namespace) -> int:
    """`status`, `certs list|show|delete` (cli.py parsed the arguments)."""
    if args.command == "status":
        return await cmd_status(app, args.output)
    if args.certs_command == "show":
        from controller.cli_show import cmd_show

        return await cmd_show(app, args.name, args.output)
    if args.certs_command == "delete":
        return await cmd_delete(app, args.name, revoke=args.revoke)
    return cmd_list(app, args.output)


# -- certs list ---------------------------------------------------------------------------------


def cmd_list(app: App, output: str) -> int:
    stored, problems = app.store.load_all()
    now = app.reconciler.clock()
    statuses = app.status_store.load_all()
    rows: list[dict[str, Any]] = []
    for domain in sorted(stored):
        info = stored[domain].info
        status = statuses.get(domain)
        rows.append({
            "domain": domain,
            "names": list(info.names),
            "subject_cn": info.common_name,
            "not_after": info.not_after.isoformat(),
            "days_left": round((info.not_after - now).total_seconds() / 86400, 1),
            "key_type": info.key_type.value if info.key_type else "unknown",
            "serial": info.serial,
            "issuer": info.issuer,
            # the directory URL of the CA that issued it ([acme]'s or a fallback's), if known
            "ca": status.issuer_ca if status is not None else None,
        })
    doc: dict[str, Any] = {"certificates": rows, "problems": dict(problems)}
    if app.fleet is not None:
        doc["fleet"] = fleet_listing(app, rows)

    def text(wide: bool) -> None:
        c = Colour.for_stream(sys.stdout)
        cols = ["domain", "names", "not_after", "days_left", "key_type", "serial"]
        if wide:
            cols += ["subject_cn", "issuer", "ca"]
        grid = [[col.upper() for col in cols]]
        grid += [[_cell(r[col] if col != "ca" else r[col] or "-") for col in cols]
                 for r in rows]
        for domain in sorted(problems):  # a row too, so an unusable pair is not missed
            grid.append([domain, "-", "UNUSABLE", *["-"] * (len(cols) - 3)])

        def left(cell: str) -> str:
            try:
                return c.state(cell, float(cell) >= 7)
            except ValueError:
                return cell

        styles = [None, None, lambda s: c("red", s) if s == "UNUSABLE" else s, left]
        table(grid, colour=c, styles=styles)
        if "fleet" in doc:
            _print_fleet(doc["fleet"], c)
        for domain, why in sorted(problems.items()):
            print(f"{c('red', 'problem:')} {domain}: {why} (a desired name's pair is "
                  "quarantined and reissued by the next reconcile)")

    emit(doc, output, text)
    return 0


def _cell(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


# -- certs delete -------------------------------------------------------------------------------


async def cmd_delete(app: App, name: str, *, revoke: bool) -> int:
    from controller.adapters.store.events import EventLog, cli_peer
    from controller.adapters.store.lock import StoreLock
    from controller.admin_backend import record_event, revoke_stored
    from controller.errors import ControllerError
    from controller.paths import validate_store_key

    domain = validate_store_key(name)  # a dual block's second certificate: <name>@<slot>
    lock = StoreLock(app.paths)
    if not lock.try_acquire():
        return await _delete_through_admin(app.config, domain, revoke=revoke,
                                           holder=lock.holder())
    events = EventLog(app.paths)
    try:
        try:
            revoked = revoke and await revoke_stored(app.cert_store, app.issuer, domain,
                                                     now=app.reconciler.clock())
            where = await asyncio.to_thread(app.cert_store.quarantine, domain)
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
        return fail(f"no certificate for {domain} in the store")
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
        return fail(str(doc.get("error") or f"HTTP {status} from the admin API"))
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
        fail(f"{holder} holds the store lock but its admin API at {netloc} does not answer "
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
            return fail(f"the admin API answered HTTP {code} without a health document")
    emit(doc, output, lambda wide: _print_status(doc, wide=wide))
    return 0 if doc.get("ok") else 1


def store_status(app: App) -> dict[str, Any]:
    """What the store says with no controller running: counts, problems, the soonest expiry."""
    stored, problems = app.store.load_all()
    statuses = app.status_store.load_all()
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


# -- fleet mode ---------------------------------------------------------------------------------


def fleet_listing(app: App, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fleet mode's part of `certs list`: per certificate in the fleet's store, which node
    serves which fingerprint, and where the nodes' njet.conf disagree."""
    fleet = app.fleet
    assert fleet is not None
    from controller.errors import ControllerError

    try:
        certs = fleet.store.fleet_rows()
        served = fleet.status.served_by()
        view = fleet.nodes.merged(app.reconciler.desired(keep_last_good=True))
    except ControllerError as exc:
        return {"node": fleet.node, "error": str(exc)}
    mirrored = {r["domain"] for r in rows}
    out = []
    for row in sorted(certs, key=lambda r: r.key):
        nodes = [{"node": s.node, "fingerprint": s.fingerprint,
                  "current": s.fingerprint == row.fingerprint,
                  "probed_at": s.probed_at.isoformat() if s.probed_at else None}
                 for s in served.get(row.key, [])]
        out.append({"domain": row.key, "fingerprint": row.fingerprint, "serial": row.serial,
                    "not_after": row.not_after.isoformat(), "written_by": row.written_by,
                    "mirrored_here": row.key in mirrored, "served_by": nodes})
    return {"node": fleet.node, "certificates": out,
            "disagreements": list(view.disagreements)}


def _print_fleet(doc: dict[str, Any], c: Colour) -> None:
    if "error" in doc:
        print(f"{c('red', 'fleet:')} the fleet database cannot be read: {doc['error']}")
        return
    print(f"\nfleet (this node: {doc['node']}): who serves what")
    grid = [["DOMAIN", "SERIAL", "WRITTEN_BY", "SERVED_BY"]]
    for cert in doc["certificates"]:
        serving = ", ".join(
            f"{n['node']}" + ("" if n["current"] else
                              f" (old {str(n['fingerprint'] or 'nothing')[:12]})")
            for n in cert["served_by"]) or "-"
        grid.append([cert["domain"], cert["serial"], cert["written_by"], serving])
    table(grid, colour=c, styles=[None])
    for line in doc["disagreements"]:
        print(f"{c('yellow', 'njet.conf differs:')} {line}")
