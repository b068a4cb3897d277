"""Bench 4's measuring process: a fresh interpreter that observes and plans a big prefix.

`python -m bench.scale_child PREFIX [--noop-runs K] [--profile FILE]` prints one JSON object:
import time, cold observe+plan (load config + App + `Reconciler.compute`: parse njet.conf, load
the store, plan), a breakdown of its parts (fresh objects, warm OS cache), the first full pass
(it writes a status file per certificate), the median of K no-op passes (`pass_once`: parse +
store + plan + fold, store-only mode), the actions each plan held, and this process's RSS
(peak and after imports); with --tracemalloc also the lines holding the most live memory.
Run by bench/scale.py so that the RSS is the controller's own.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def top_allocations(snapshot: tracemalloc.Snapshot, top: int = 12) -> list[str]:
    """Where the live memory was allocated: 'file:line size=…MB count=…'."""
    rows = []
    for stat in snapshot.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        rows.append(f"{Path(frame.filename).name}:{frame.lineno} "
                    f"size={stat.size / 1e6:.1f}MB count={stat.count}")
    return rows


async def measure(prefix: Path, noop_runs: int, profiler: cProfile.Profile | None,
                  *, trace: bool = False) -> dict[str, Any]:
    from controller.adapters.store.lego import LegoStore
    from controller.app import App
    from controller.config import load_config
    from controller.desired import load_desired
    from controller.model import first_key_type
    from controller.paths import StorePaths

    imported = time.perf_counter()
    rss_imports = rss_now_mb()
    if trace:
        tracemalloc.start()
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    cfg = load_config(prefix / "conf" / "cert-manager.toml", prefix=prefix)
    app = App(cfg)
    cold = await app.reconciler.compute(probe=False)
    cold_seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()

    t = time.perf_counter()
    desired = load_desired(cfg.conf_path, key_type=first_key_type(cfg.acme.keyType))
    parse_seconds = time.perf_counter() - t
    t = time.perf_counter()
    stored, problems = LegoStore(StorePaths(prefix)).load_all()
    store_seconds = time.perf_counter() - t

    t = time.perf_counter()
    first = await app.reconciler.pass_once(probe=False)
    first_seconds = time.perf_counter() - t

    if profiler is not None:
        profiler.enable()
    noop: list[float] = []
    actions: list[int] = []
    for _ in range(noop_runs):
        t = time.perf_counter()
        res = await app.reconciler.pass_once(probe=False)
        noop.append(time.perf_counter() - t)
        actions.append(len(res.plan.actions))
    if profiler is not None:
        profiler.disable()
    allocations = top_allocations(tracemalloc.take_snapshot()) if trace else []
    keep = (app, cold)  # alive until here, so the snapshot and RSS include them
    await app.close()
    del keep
    return {
        "blocks": len(desired.specs),
        "stored": len(stored),
        "store_problems": len(problems),
        "import_seconds": round(imported - _T0, 4),
        "cold_seconds": round(cold_seconds, 4),
        "cold_actions": len(cold.plan.actions),
        "parse_conf_seconds": round(parse_seconds, 4),
        "load_store_seconds": round(store_seconds, 4),
        "first_pass_seconds": round(first_seconds, 4),
        "first_pass_actions": len(first.plan.actions),
        "noop_seconds": round(statistics.median(noop), 4),
        "noop_runs": [round(v, 4) for v in noop],
        "noop_actions": max(actions) if actions else 0,
        "rss_after_imports_mb": round(rss_imports, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **({"top_allocations": allocations} if trace else {}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("prefix", type=Path)
    p.add_argument("--noop-runs", type=int, default=5)
    p.add_argument("--profile", type=Path, help="write cProfile stats (cold + no-op passes)")
    p.add_argument("--tracemalloc", action="store_true", help="report the top allocations")
    args = p.parse_args(argv)
    profiler = cProfile.Profile() if args.profile else None
    out = asyncio.run(measure(args.prefix, args.noop_runs, profiler, trace=args.tracemalloc))
    if profiler is not None:
        profiler.dump_stats(str(args.profile))
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
