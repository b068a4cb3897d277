"""`store migrate --from file --to postgres` (and back): copy a store between the file layout
under `<prefix>/.lego/` and the fleet database, without reissuing anything.

Called by cli.py. Both directions need the TOML's `[store]` postgres section (the database
to copy to or from); `--from`/`--to` say which way. What is copied: every usable certificate
with its chain and key (keys sealed with `encryptionKeyFile` when it is set), its status, and
the ACME account files. The source is left as it is (a copy, so going back is always
possible); the controller must not run meanwhile (the store lock is held). A certificate the
target already holds with the same fingerprint is skipped; a different one is refused and
reported, never overwritten. Afterwards every copied certificate is read back from the target
and its serial compared: the command exits 0 only when every serial is there.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from controller.errors import ConfigError, ControllerError
from controller.model import IssuedCert

if TYPE_CHECKING:
    from controller.app import App


def _needs_fleet(app: App) -> None:
    if app.fleet is None:
        raise ConfigError('store migrate needs the TOML\'s [store] backend = "postgres" '
                          "section (with dsn, dsnFile or dsnEnv): the database to copy to or "
                          "from")


def _file_pair(app: App, key: str) -> IssuedCert | None:
    """The file store's pair for `key` as an IssuedCert (None: nothing usable)."""
    mirror = app.fleet.mirror if app.fleet is not None else None
    assert mirror is not None
    stored = mirror.get(key)
    cert, pkey = mirror.cert_pem(key), mirror.key_pem(key)
    if stored is None or not stored.key_matches or cert is None or pkey is None:
        return None
    issuer_path = app.paths.issuer(key)
    issuer = issuer_path.read_bytes() if issuer_path.is_file() else b""
    return IssuedCert(cert_pem=cert, issuer_pem=issuer, key_pem=pkey,
                      cert_url=stored.cert_url or "")


async def cmd_migrate(app: App, source: str, target: str) -> int:
    from controller.adapters.store.lock import StoreLock
    from controller.cli import take_store_lock

    _needs_fleet(app)
    if {source, target} != {"file", "postgres"}:
        raise ConfigError("store migrate: --from and --to must be file and postgres, one each")
    lock = await take_store_lock(StoreLock(app.paths))
    try:
        if target == "postgres":
            return await asyncio.to_thread(_to_postgres, app)
        return await asyncio.to_thread(_to_files, app)
    finally:
        lock.release()


def _to_postgres(app: App) -> int:
    from controller.adapters.store.statusfile import StatusFiles

    fleet = app.fleet
    assert fleet is not None
    fleet.db.ensure_schema()
    stored, problems = fleet.mirror.load_all()
    copied: list[str] = []
    skipped: list[str] = []
    refused: list[str] = []
    for key in sorted(stored):
        pair = _file_pair(app, key)
        if pair is None:
            refused.append(f"{key}: its key does not match its certificate (not copied)")
            continue
        try:
            written = fleet.store.put_unfenced(key, pair, by=f"migrate:{fleet.node}")
        except ControllerError as exc:
            refused.append(f"{key}: {exc}")
            continue
        (copied if written else skipped).append(key)
    statuses = StatusFiles(app.paths, read_only=True).load_all()
    for status in statuses.values():
        if status.domain in stored:
            fleet.status.save(status)
    accounts = fleet.accounts.push()
    have = {row.key: row.serial for row in fleet.store.fleet_rows()}
    missing = [k for k in copied if have.get(k) != stored[k].info.serial]
    return _report("database " + fleet.db.shown, copied, skipped, refused, missing,
                   statuses=len(statuses), accounts=accounts, problems=dict(problems),
                   serials={k: stored[k].info.serial for k in copied})


def _to_files(app: App) -> int:
    from controller.adapters.store.statusfile import StatusFiles

    fleet = app.fleet
    assert fleet is not None
    fleet.db.ensure_schema()
    rows = fleet.store.fleet_rows()
    existing, _ = fleet.mirror.load_all()
    copied: list[str] = []
    skipped: list[str] = []
    refused: list[str] = []
    serials: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: r.key):
        here = existing.get(row.key)
        if here is not None and here.info.fingerprint == row.fingerprint:
            skipped.append(row.key)
            continue
        if here is not None:
            refused.append(f"{row.key}: the file store holds another certificate "
                           f"({here.info.serial}); not overwritten")
            continue
        pair = fleet.store.export(row.key)
        if pair is None:
            refused.append(f"{row.key}: could not be read from the database")
            continue
        try:
            fleet.mirror.put(row.key, pair)
        except ControllerError as exc:
            refused.append(f"{row.key}: {exc}")
            continue
        copied.append(row.key)
        serials[row.key] = row.serial
    files = StatusFiles(app.paths)
    statuses = fleet.status.load_all()
    for status in statuses.values():
        files.save(status)
    accounts = fleet.accounts.pull()
    now, _ = fleet.mirror.load_all()
    missing = [k for k in copied if k not in now or now[k].info.serial != serials[k]]
    return _report(f"files under {app.paths.lego}", copied, skipped, refused, missing,
                   statuses=len(statuses), accounts=accounts, problems={}, serials=serials)


def _report(target: str, copied: list[str], skipped: list[str], refused: list[str],
            missing: list[str], *, statuses: int, accounts: int, problems: dict[str, str],
            serials: dict[str, str]) -> int:
    for key in copied:
        print(f"copied {key} serial {serials[key]}")
    print(f"{len(copied)} certificates copied to {target} ({len(skipped)} already there), "
          f"{statuses} statuses, {accounts} account files")
    for line in refused:
        print(f"not copied: {line}", file=sys.stderr)
    for key, why in sorted(problems.items()):
        print(f"not copied: {key}: {why}", file=sys.stderr)
    if missing:
        print(f"error: {len(missing)} copied certificates are not in the target with their "
              f"serial: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 1 if refused else 0


def fleet_text(doc: dict[str, Any]) -> list[str]:
    """`diff`'s fleet lines (Fleet.describe's document)."""
    lines = [f"fleet: node {doc['node']}, database {doc['database']}"]
    if doc.get("database_error"):
        lines.append(f"  ! database unreachable: {doc['database_error']} (no orders; the "
                     "local mirror is served)")
    if not doc.get("keys_encrypted"):
        lines.append("  ! private keys are stored in the database in clear: set [store] "
                     "encryptionKeyFile")
    nodes = doc.get("nodes", [])
    if nodes:
        live = [n["name"] for n in nodes if n["live"]]
        dead = [n["name"] for n in nodes if not n["live"]]
        lines.append(f"  nodes live: {', '.join(live) or '-'}"
                     + (f"; not live: {', '.join(dead)}" if dead else ""))
    for lease in doc.get("leases", []):
        lines.append(f"  lease {lease['key']}: held by {lease['owner']} (generation "
                     f"{lease['generation']}) until {lease['expires_at']}")
    if doc.get("settings_agree") is False:
        lines.append(f"  ! this node's [acme] settings differ from the fleet's (those of "
                     f"{doc.get('settings_leader')}): it applies but does not order")
    elif doc.get("settings_differing"):
        lines.append("  ! nodes whose [acme] settings differ (they do not order): "
                     + ", ".join(doc["settings_differing"]))
    for pending in doc.get("pending_applies", []):
        lines.append(f"  ~ {pending['key']}: not yet served by {', '.join(pending['nodes'])}")
    for line in doc.get("disagreements", []):
        lines.append(f"  ~ {line}")
    return lines
