"""Bench 8 part 2 (bench/fleet.py): a node's cold start over N certificates held in the fleet
database, against the file backend over the same N on disk. In process, store-only.

1. bench/scalegen.py writes a prefix with N managed blocks and N valid pairs (lego layout).
2. File backend: `load_config` + `App` + the first `reconciler.compute()` over it (the store
   loaded from disk, its index written by one load before: `first_load_seconds`), then the
   median of NOOP_RUNS further computes.
3. The same prefix with a `[store] postgres` section: `store migrate --from file --to postgres`
   (controller/cli_store.cmd_migrate, the CLI's own function; its time is reported), then this
   node's first compute: it joins the fleet (heartbeat, publishes its N specs) and compares
   every row with its full mirror, fetching none ("restart, mirror full").
4. A new node (fresh prefix, same njet.conf, empty mirror): App + first compute, which pulls
   all N into its mirror (the judged cold start), then the median no-op compute. The first
   node is live, so each pass merges its N published specs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any

from bench.common import BenchError, free_port, render_toml, summary
from bench.scalegen import ThrowawayCA, scale_conf, write_store

NOOP_RUNS = 5
FILE_TOML = "cert-manager.toml"
FLEET_TOML = "fleet.toml"


def _toml(store: dict[str, Any] | None) -> dict[str, Any]:
    # ari = false: no CA here; the plan is computed, nothing is ordered
    toml: dict[str, Any] = {
        "acme": {"email": "bench@example.test", "keyType": "ec256", "ari": False},
        "njet": {"apiAddress": ""},
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "log": {"v": 0},
    }
    if store is not None:
        toml["store"] = store
    return toml


def _write_prefix(root: Path, n: int, tomls: dict[str, dict[str, Any] | None]) -> None:
    """conf/njet.conf with N managed blocks; conf/<name> for each TOML (its [store], or the
    file backend)."""
    (root / "conf").mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    (root / "conf" / "njet.conf").write_text(scale_conf(n))
    for name, store in tomls.items():
        (root / "conf" / name).write_text(render_toml(_toml(store)))


async def _measure(toml: Path, prefix: Path, *, noop_runs: int = NOOP_RUNS) -> dict[str, Any]:
    """App + first compute (timed together, with the config load), then no-op computes."""
    from controller.app import App
    from controller.config import load_config

    started = time.perf_counter()
    app = App(load_config(toml, prefix=prefix))
    try:
        built = time.perf_counter() - started
        cold = await app.reconciler.compute(probe=False)
        cold_seconds = time.perf_counter() - started
        noop: list[float] = []
        actions: list[int] = []
        for _ in range(noop_runs):
            t = time.perf_counter()
            res = await app.reconciler.compute(probe=False)
            noop.append(time.perf_counter() - t)
            actions.append(len(res.plan.actions))
        stored, problems = app.store.load_all()
    finally:
        await app.close()
    return {"cold_seconds": round(cold_seconds, 4), "app_seconds": round(built, 4),
            "cold_actions": len(cold.plan.actions),
            **({"noop_seconds": summary(noop)} if noop else {}),
            "noop_actions": max(actions) if actions else 0, "stored": len(stored),
            "store_problems": len(problems)}


async def _migrate(app: Any) -> tuple[int, str]:
    from controller.cli_store import cmd_migrate

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = await cmd_migrate(app, "file", "postgres")
    return rc, out.getvalue()


def _prepare(workdir: Path, dsn: str, n: int) -> float:
    """The first prefix (N pairs; a file and a fleet TOML) and the new node's (no store);
    returns the generation's seconds."""
    key_file = workdir / "fleet.key"
    workdir.mkdir(parents=True, exist_ok=True)
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o600)

    def store(node: str) -> dict[str, Any]:
        return {"backend": "postgres", "dsn": dsn, "encryptionKeyFile": str(key_file),
                "nodeName": node}

    started = time.perf_counter()
    src = workdir / "first"
    _write_prefix(src, n, {FILE_TOML: None, FLEET_TOML: store("bench-first")})
    write_store(src, n, ThrowawayCA())
    for folder in (src / ".lego", src / ".lego" / "certificates"):
        folder.chmod(0o700)  # as the controller keeps it (else a warning, then a repair)
    generate = time.perf_counter() - started
    _write_prefix(workdir / "second", n, {FLEET_TOML: store("bench-second")})
    return generate


async def _run(workdir: Path, n: int) -> dict[str, Any]:
    from controller.app import App
    from controller.config import load_config

    src, node = workdir / "first", workdir / "second"
    first = await _measure(src / "conf" / FILE_TOML, src, noop_runs=0)  # writes the index
    file_backend = {**await _measure(src / "conf" / FILE_TOML, src),
                    "first_load_seconds": first["cold_seconds"]}
    app = App(load_config(src / "conf" / FLEET_TOML, prefix=src))
    try:
        t = time.perf_counter()
        rc, text = await _migrate(app)
        migrate = time.perf_counter() - t
    finally:
        await app.close()
    if rc != 0 or f"{n} certificates copied" not in text:
        raise BenchError(f"store migrate of {n} certificates failed ({rc}):\n{text[-2000:]}")
    restart = await _measure(src / "conf" / FLEET_TOML, src, noop_runs=1)
    fleet = await _measure(node / "conf" / FLEET_TOML, node)
    if fleet["stored"] != n:
        raise BenchError(f"the new node's mirror holds {fleet['stored']} of {n} certificates "
                         "after its first compute")
    return {"n": n, "migrate_seconds": round(migrate, 4), "file": file_backend,
            "postgres_restart_mirror_full": restart, "postgres": fleet}


def run_cold(workdir: Path, dsn: str, n: int) -> dict[str, Any]:
    generate = _prepare(workdir, dsn, n)
    result: dict[str, Any] = asyncio.run(_run(workdir, n))
    return {**result, "generate_seconds": round(generate, 4)}
