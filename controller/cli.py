"""Command line: `njet-cert-manager [-p PREFIX] [-c TOML] [run|reconcile|diff|status|certs|gc|
schema]`.

`certs renew NAME [--force]` asks for a forced renewal (through the running controller's admin
API when one holds the store lock, else in the status file). `certs list|delete` and `status`
are in cli_certs.py, `certs show` in cli_show.py (their output, and `reconcile`'s progress, in
cli_output.py); `gc confirm` and `certs quarantine list|restore NAME` are in cli_gc.py.

With no subcommand it runs the loop: that is exactly how NJet launches a copilot
(argv `[prog, "-p", prefix, "-c", toml]`, empty environment, any working directory).
`-p`, `-c` and `-v` are accepted before the subcommand and after it (`diff -p X -c Y`); given
in both places, the later one wins. Exit codes (the README's table): 0 ok / in sync; 1 error
(config, store, CA) or (reconcile) something could not progress; 2 (diff) changes pending;
64 (EX_USAGE) a usage error: an unknown option or subcommand, a bad choice; 130 interrupted.
`reconcile` waits for the store lock up to $NJCM_LOCK_TIMEOUT seconds (default 60), naming the
holder's pid at once and in the error. Run by the `njet-cert-manager` console script
(pyproject.toml) and `python -m controller.cli`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import orjson

from controller import __version__
from controller.cli_output import OUTPUTS
from controller.config import Config, load_config, unknown_keys
from controller.errors import ConfigError, ControllerError, StoreError
from controller.logs import log_event, setup_logging
from controller.render import (
    plan_to_dict,
    plan_to_text,
    renewal_rows,
    renewals_to_list,
    renewals_to_text,
)

if TYPE_CHECKING:
    from controller.adapters.store.lock import StoreLock

DEFAULT_PREFIX = "/usr/local/njet"
DEFAULT_CONFIG = "conf/cert-manager.toml"
EXIT_USAGE = 64  # EX_USAGE (sysexits.h): not 2, which `diff` uses for "changes pending"


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors exiting EXIT_USAGE (usage and message on stderr)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_common(p: argparse.ArgumentParser, *, top: bool) -> None:
    """-p/-c/-v. Only the top parser sets defaults: on a subcommand they are SUPPRESS, so an
    option not repeated after the subcommand leaves the value given (or defaulted) before it."""
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    p.add_argument("-p", "--prefix", default=default(DEFAULT_PREFIX),
                   help="NJet prefix; .lego/ lives here, relative paths resolve against it "
                        f"(default {DEFAULT_PREFIX})")
    p.add_argument("-c", "--config", default=default(DEFAULT_CONFIG),
                   help="TOML config (relative: against the prefix, then the working dir; "
                        f"default {DEFAULT_CONFIG})")
    p.add_argument("-v", "--verbose", action="count", default=default(None),
                   help="more logging (overrides [log] v)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="njet-cert-manager",
        description="Keeps NJet's TLS certificates issued, renewed and applied through ACME.",
    )
    _add_common(p, top=True)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = _Parser(add_help=False)
    _add_common(common, top=False)
    sub = p.add_subparsers(dest="command")
    sub.add_parser("run", parents=[common], help="the long-running controller (default)")
    sub.add_parser("reconcile", parents=[common],
                   help="passes until converged (0) or stuck (1), then exit")
    d = sub.add_parser("diff", parents=[common],
                       help="dry run: what would be done and why (0 in sync, 2 pending)")
    d.add_argument("-o", "--output", choices=["text", "json"], default="text")
    st = sub.add_parser("status", parents=[common],
                        help="the running controller's health, else what the store says")
    st.add_argument("-o", "--output", choices=OUTPUTS, default="table")
    c = sub.add_parser("certs", parents=[common], help="inspect stored certificates")
    csub = c.add_subparsers(dest="certs_command", required=True)
    cl = csub.add_parser("list", parents=[common], help="table of stored certificates")
    cl.add_argument("-o", "--output", choices=OUTPUTS, default="table")
    cs = csub.add_parser("show", parents=[common],
                         help="one certificate: spec, conditions, served, renewal, events")
    cs.add_argument("name", help="the certificate (its first server_name)")
    cs.add_argument("-o", "--output", choices=OUTPUTS, default="table")
    cd = csub.add_parser("delete", parents=[common],
                         help="move a certificate into quarantine/ (through the running "
                              "controller's admin API)")
    cd.add_argument("name", help="the certificate (its first server_name)")
    cd.add_argument("--revoke", action="store_true", help="revoke it at the CA first")
    cr = csub.add_parser("renew", parents=[common],
                         help="force a renewal (through the running controller's admin API)")
    cr.add_argument("name", help="the certificate (its first server_name)")
    cr.add_argument("--force", action="store_true",
                    help="also when the certificate is younger than forceRenewMinAge")
    cq = csub.add_parser("quarantine", parents=[common],
                         help="pairs taken out of service (.lego/quarantine/)")
    cqsub = cq.add_subparsers(dest="quarantine_command", required=True)
    cql = cqsub.add_parser("list", parents=[common], help="quarantined pairs, newest last")
    cql.add_argument("-o", "--output", choices=["table", "json"], default="table")
    cqr = cqsub.add_parser("restore", parents=[common],
                           help="put a quarantined pair back (never over an existing one)")
    cqr.add_argument("name", help="a domain (its newest entry) or an entry's folder name")
    g = sub.add_parser("gc", parents=[common], help="garbage collection of stored certificates")
    gsub = g.add_subparsers(dest="gc_command", required=True)
    gsub.add_parser("confirm", parents=[common],
                    help="release, once, the deletions the deletion guard holds")
    sto = sub.add_parser("store", parents=[common], help="the certificate store's backends")
    stosub = sto.add_subparsers(dest="store_command", required=True)
    mig = stosub.add_parser("migrate", parents=[common],
                            help="copy the store between the files and the fleet database "
                                 "(no reissue)")
    mig.add_argument("--from", dest="source", choices=["file", "postgres"], required=True)
    mig.add_argument("--to", dest="target", choices=["file", "postgres"], required=True)
    sub.add_parser("schema", parents=[common], help="print the JSON schema of the TOML config")
    return p


def resolve_config(prefix: Path, value: str) -> Path:
    p = Path(value)
    if p.is_absolute():
        return p
    under_prefix = prefix / p
    if under_prefix.exists() or not (Path.cwd() / p).exists():
        return under_prefix
    return (Path.cwd() / p).resolve()


def load(args: argparse.Namespace) -> Config:
    prefix = Path(args.prefix).expanduser().resolve()
    cfg = load_config(resolve_config(prefix, args.config), prefix=prefix)
    verbosity = args.verbose if args.verbose is not None else cfg.log.v
    setup_logging(verbosity=verbosity, fmt=cfg.log.format)
    for key in unknown_keys(cfg):
        log_event("unknown config key ignored", level=logging.WARNING, key=key, file=cfg.source)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        sys.stdout.write(orjson.dumps(Config.model_json_schema(),
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    try:
        cfg = load(args)
        return asyncio.run(dispatch(args, cfg))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ControllerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def dispatch(args: argparse.Namespace, cfg: Config) -> int:
    from controller.app import App

    if args.command in (None, "run"):
        from controller.service import run_service

        return await run_service(cfg)
    certs = getattr(args, "certs_command", None)
    app = App(cfg, read_only=args.command in ("diff", "status") or certs in ("list", "show"))
    try:
        if args.command == "diff":
            return await cmd_diff(app, args.output, everything=bool(args.verbose))
        if args.command == "reconcile":
            return await cmd_reconcile(app)
        if args.command == "certs" and args.certs_command == "renew":
            return await cmd_certs_renew(app, args.name, force=args.force)
        if args.command == "gc" or certs == "quarantine":
            from controller import cli_gc

            return await cli_gc.dispatch(app, args)
        if args.command == "store":
            from controller import cli_store

            return await cli_store.cmd_migrate(app, args.source, args.target)
        if args.command in ("certs", "status"):
            from controller import cli_certs

            return await cli_certs.dispatch(app, args)
    finally:
        await app.close()
    return 1


async def cmd_diff(app: object, output: str, *, everything: bool = False) -> int:
    """The plan, then when each certificate renews and why (those due within 7 days; with
    `everything` (-v) all of them)."""
    from controller.app import App

    assert isinstance(app, App)
    result = await app.reconciler.compute(probe=True)
    now = app.reconciler.clock()
    rows = renewal_rows(result.desired, result.observed, app.reconciler.statuses,
                        app.reconciler.settings, now, everything=everything)
    fleet = app.fleet.describe() if app.fleet is not None else None
    if output == "json":
        doc = {**plan_to_dict(result.plan, now=now), "renewals": renewals_to_list(rows)}
        if fleet is not None:
            doc["fleet"] = fleet
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from controller.cli_store import fleet_text

        print("\n".join([plan_to_text(result.plan), *renewals_to_text(rows),
                         *(fleet_text(fleet) if fleet is not None else [])]))
    return 0 if result.plan.in_sync else 2


LOCK_TIMEOUT_ENV = "NJCM_LOCK_TIMEOUT"  # seconds a command waits for the store lock
DEFAULT_LOCK_TIMEOUT = 60.0


def lock_timeout() -> float:
    """The store-lock wait of a command: $NJCM_LOCK_TIMEOUT seconds, default 60."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise ConfigError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds from 0 to 86400")
    return value


async def take_store_lock(lock: StoreLock) -> StoreLock:
    """Hold `lock` (a StoreLock); while another process has it, say which pid at once (a log
    line on stderr) and wait up to lock_timeout(); a StoreError naming the holder after that."""
    timeout = lock_timeout()
    if lock.try_acquire():
        return lock
    log_event(f"waiting for {lock.holder()} to release the store lock", level=logging.WARNING,
              lock=str(lock.path), timeout=f"{timeout:g}s")
    if await lock.acquire_async(timeout=timeout):
        return lock
    raise StoreError(f"{lock.holder()} still holds the store lock {lock.path} after waiting "
                     f"{timeout:g}s (another njet-cert-manager on this prefix); stop it, or "
                     f"retry once it is done")


async def cmd_reconcile(app: object) -> int:
    from controller.adapters.store.events import EventLog, PassEvents
    from controller.adapters.store.lock import StoreLock
    from controller.app import App
    from controller.cli_output import ReconcileProgress

    assert isinstance(app, App)
    lock = await take_store_lock(StoreLock(app.paths))
    try:
        await app.prepare()
        app.reconciler.executor.progress = ReconcileProgress()  # a bar on a terminal
        app.reconciler.observers.append(PassEvents(EventLog(app.paths)))
        result = await app.reconciler.converge(probe=True)
        final = result
        if final.plan.actions:
            final = await app.reconciler.compute(probe=False)
        for o in result.outcomes:
            if not o.ok and not o.skipped:
                print(f"failed {o.action.kind} {o.action.domain}: {o.error}", file=sys.stderr)
        if final.plan.in_sync:
            print(plan_to_text(final.plan))
            return 0
        print("not converged; left:", file=sys.stderr)
        print(plan_to_text(final.plan), file=sys.stderr)
        return 1
    finally:
        lock.release()


async def cmd_certs_renew(app: object, name: str, *, force: bool) -> int:
    """`certs renew NAME [--force]`: 0 requested (or already pending), 1 refused or unknown.

    A controller holding the store lock is asked through its admin API (`[admin] address`,
    the token), so it wakes at once and writes the event log itself; with no controller
    running the status is written here, with the same limits, and the next `run` or
    `reconcile` orders it."""
    from controller.adapters.store.events import EventLog, cli_peer
    from controller.adapters.store.lock import StoreLock
    from controller.admin_backend import forced_renewal, record_event, renew_limits
    from controller.app import App
    from controller.paths import validate_store_key

    assert isinstance(app, App)
    domain = validate_store_key(name.strip().lower().rstrip("."))  # <name>@<slot> too
    lock = StoreLock(app.paths)
    if not lock.try_acquire():
        return await _renew_through_admin(app.config, domain, force=force,
                                          holder=lock.holder())
    try:
        result = await forced_renewal(app.reconciler, domain, force=force,
                                      limits=renew_limits(app.config))
        record_event(EventLog(app.paths), kind="cli", peer=cli_peer(), action="renew",
                     domain=domain, result=result.outcome, detail=result.reason or None)
    finally:
        lock.release()
    if result.outcome == "requested":
        print(f"renewal of {domain} requested; the next `run` or `reconcile` orders it")
    elif result.outcome == "pending":
        print(f"a forced renewal of {domain} is already pending")
    elif result.outcome == "unknown":
        print(f"error: {result.reason}; nothing to renew", file=sys.stderr)
        return 1
    else:
        print(f"error: renewal of {domain} refused: {result.reason}", file=sys.stderr)
        return 1
    return 0


async def _renew_through_admin(cfg: Config, domain: str, *, force: bool, holder: str) -> int:
    from controller.cli_admin import post_to_admin

    path = f"/api/v1/cert/{domain}/renew" + ("?force=true" if force else "")
    answer = await post_to_admin(cfg, path, seconds=30, holder=holder)
    if answer is None:
        return 1
    status, doc, netloc = answer
    said = doc.get("status") or doc.get("error")
    if status == 202:
        print(f"{domain}: {said or 'renewal requested'} (the running controller, {holder})")
        return 0
    print(f"error: {said or f'HTTP {status} from the admin API at {netloc}'}", file=sys.stderr)
    return 1


def cmd_certs_list(app: object, output: str) -> int:
    """`certs list` (cli_certs.cmd_list; kept here for the callers that import it from cli)."""
    from controller.app import App
    from controller.cli_certs import cmd_list

    assert isinstance(app, App)
    return cmd_list(app, output)


if __name__ == "__main__":
    raise SystemExit(main())
