"""The garbage-collection commands of the CLI: `gc confirm`, `certs quarantine list|restore`.

- `gc confirm`: release, once, the deletions the deletion guard holds (a pass that would
  delete more than `[controller] maxDeleteShare` of the stored certificates, or all of them).
  With a controller holding the store lock it goes through that controller's admin API
  (POST /api/v1/gc/confirm: it saves the confirmation and wakes at once); else the plan is
  computed here and `.lego/gc-confirm.json` saved, for the next `run` or `reconcile`.
  0 released, 1 nothing held (or an error).
- `certs quarantine list [-o json]`: the pairs in `.lego/quarantine/` with when they go.
- `certs quarantine restore NAME`: put one back (a domain: its newest entry; or an entry's
  folder name), under the store lock; refused while the name has files in certificates/.
Mutating calls are written to the event log (kind "cli"). Called by cli.py's dispatch.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import orjson

from controller.errors import StoreError

if TYPE_CHECKING:
    from controller.app import App
    from controller.config import Config


async def dispatch(app: App, args: argparse.Namespace) -> int:
    """`gc confirm` and `certs quarantine list|restore` (cli.py parsed the arguments)."""
    if args.command == "gc":
        return await cmd_gc_confirm(app)
    if args.quarantine_command == "list":
        return cmd_quarantine_list(app, args.output)
    return await cmd_quarantine_restore(app, args.name)


def _event(app: App, action: str, domain: str | None, result: str, detail: str | None) -> None:
    from controller.adapters.store.events import EventLog, cli_peer
    from controller.admin_backend import record_event

    record_event(EventLog(app.paths), kind="cli", peer=cli_peer(), action=action, domain=domain,
                 result=result, detail=detail)


async def cmd_gc_confirm(app: App) -> int:
    from controller.adapters.store.events import cli_peer
    from controller.adapters.store.gcconfirm import confirm_held
    from controller.adapters.store.lock import StoreLock

    lock = StoreLock(app.paths)
    if not lock.try_acquire():
        return await _confirm_through_admin(app.config, holder=lock.holder())
    try:
        result = await app.reconciler.compute(probe=False)
        released = confirm_held(result.plan, app.gc_confirmations, now=app.reconciler.clock(),
                                by=cli_peer())
        _event(app, "gc confirm", None, "released" if released else "nothing held",
               f"{len(released)} deletions" if released else None)
    finally:
        lock.release()
    if not released:
        print("nothing to confirm: the deletion guard holds no deletion", file=sys.stderr)
        return 1
    hold = result.plan.gc_hold
    of = f" of {hold.stored} stored certificates" if hold else ""
    print(f"released {len(released)} deletions{of} once: {', '.join(released)}; the next "
          "`run` or `reconcile` pass moves them to quarantine/ "
          "(`certs quarantine restore NAME` brings one back)")
    return 0


async def _confirm_through_admin(cfg: Config, *, holder: str) -> int:
    from controller.cli_admin import post_to_admin

    answer = await post_to_admin(cfg, "/api/v1/gc/confirm", seconds=60, holder=holder)
    if answer is None:
        return 1
    status, doc, netloc = answer
    if status == 200:
        names = ", ".join(str(n) for n in doc.get("released", []))
        print(f"released {doc.get('count', '?')} deletions once: {names}; the running "
              f"controller ({holder}) moves them to quarantine/ now")
        return 0
    said = doc.get("error") or f"HTTP {status} from the admin API at {netloc}"
    print(f"{'nothing to confirm' if status == 409 else 'error'}: {said}", file=sys.stderr)
    return 1


def cmd_quarantine_list(app: App, output: str) -> int:
    entries = app.quarantine.entries()
    rows = [{
        "entry": q.entry,
        "domain": q.domain,
        "names": list(q.names),
        "quarantined_at": q.quarantined_at.isoformat(),
        "removed_after": q.expires_at.isoformat(),
        "not_after": q.not_after.isoformat() if q.not_after else None,
        "files": list(q.files),
        "problem": q.problem,
    } for q in entries]
    if output == "json":
        doc = {"quarantine": rows, "folder": str(app.paths.quarantine)}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    cols = ["domain", "entry", "quarantined_at", "removed_after", "not_after"]
    table = [[c.upper() for c in cols]]
    table += [[str(r[c] or "-") for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for r in rows:
        if r["problem"]:
            print(f"problem: {r['entry']}: {r['problem']}")
    return 0


async def cmd_quarantine_restore(app: App, name: str) -> int:
    from controller.adapters.store.lock import StoreLock
    from controller.cli import take_store_lock

    lock = await take_store_lock(StoreLock(app.paths))
    try:
        try:
            restored = app.quarantine.restore(name.strip())
        except StoreError as exc:
            _event(app, "quarantine restore", None, "refused", str(exc))
            raise
        _event(app, "quarantine restore", restored.domain, "restored", restored.entry)
    finally:
        lock.release()
    print(f"restored {restored.domain} from quarantine/{restored.entry} into "
          f"{app.paths.certificates}")
    return 0
