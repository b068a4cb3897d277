"""Runs the selected benches against one Pebble and collects their results.

`run_benches(opts, pebble, workdir, stem)` is called by bench/__main__.py (which starts Pebble
and writes the results) and by tests/bench/test_bench_smoke.py (tiny sizes). A bench that raises
is recorded as {"error": ...} and the others still run; a missed goal is just a figure.
Order: floor (time to served needs its median), served and events (one simulator and one
controller `run` shared), throughput (needs Pebble's http-01 port free), scale, dns01 (its own
BIND and Pebble), ari (the ARI shim in front of the one Pebble), fleet (last: its haproxy holds
Pebble's validation ports while it runs; it needs the machine's PostgreSQL).
"""

from __future__ import annotations

import os
import platform
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import BenchError

BENCHES = ("floor", "served", "throughput", "scale", "events", "dns01", "ari", "fleet")


@dataclass(frozen=True)
class Options:
    runs: int = 10  # floor
    trials: int = 5  # time to served
    names: int = 200  # throughput: controller names
    peer_certs: int = 20  # throughput: certs per peer tool
    concurrency: int = 16
    scale: int = 10_000
    sim_servers: int | None = None  # scale: simulator servers (default min(scale, 20000))
    events: int = 1000
    dns_runs: int = 5  # dns01: issuances per challenge type
    wildcards: int = 50  # dns01: wildcard certificates in one pass
    ari_certs: int = 10_000  # ari: certificates whose polls are simulated
    fleet_names: int = 200  # fleet: names on 3 nodes (and on 1)
    fleet_certs: int = 10_000  # fleet: certificates in the database for the cold start
    profile: bool = False
    only: tuple[str, ...] = BENCHES
    mode: str = "full"


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")


def _guarded(name: str, results: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> None:
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    try:
        results[name] = fn()
    except Exception as exc:
        detail = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
        results[name] = {"error": f"{type(exc).__name__}: {detail}"}
        print(f"bench: {name} failed: {detail}", file=sys.stderr, flush=True)


def run_benches(opts: Options, pebble: Any, workdir: Path, stem: Path) -> dict[str, Any]:
    from bench.ari import run_ari
    from bench.dns01 import run_dns01
    from bench.events import run_events
    from bench.fleet import run_fleet
    from bench.floor import run_floor
    from bench.scale import run_scale
    from bench.served import run_served
    from bench.simenv import SimEnv
    from bench.throughput import run_throughput

    results: dict[str, Any] = {}
    want = set(opts.only)
    if "floor" in want or "served" in want:
        _guarded("floor", results, lambda: run_floor(pebble, runs=opts.runs))
    if want & {"served", "events"}:
        try:
            with SimEnv(workdir / "simenv", pebble) as env:
                if "served" in want:
                    floor = results["floor"]
                    if "error" in floor:
                        results["served"] = {"error": "BenchError: the floor failed"}
                    else:
                        median = floor["figures"]["issue_seconds"]["median"]
                        _guarded("served", results,
                                 lambda: run_served(env, trials=opts.trials, floor_median=median))
                if "events" in want:
                    _guarded("events", results, lambda: run_events(env, count=opts.events))
        except Exception as exc:  # the shared setup failed: both benches are errors
            for name in want & {"served", "events"}:
                results.setdefault(name, {"error": f"{type(exc).__name__}: {exc}"})
            print(f"bench: simulator/controller setup failed: {exc}", file=sys.stderr)
    if "throughput" in want:
        _guarded("throughput", results, lambda: run_throughput(
            pebble, workdir / "throughput", names=opts.names, peer_certs=opts.peer_certs,
            concurrency=opts.concurrency))
    if "scale" in want:
        _guarded("scale", results, lambda: run_scale(
            workdir / "scale", n=opts.scale, results_stem=stem, profile=opts.profile,
            sim_servers=opts.sim_servers))
    if "dns01" in want:
        _guarded("dns01", results, lambda: run_dns01(
            workdir / "dns01", runs=opts.dns_runs, wildcards=opts.wildcards,
            concurrency=opts.concurrency))
    if "ari" in want:
        _guarded("ari", results, lambda: run_ari(
            pebble, workdir / "ari", certs=opts.ari_certs, trials=opts.trials))
    if "fleet" in want:
        _guarded("fleet", results, lambda: run_fleet(
            pebble, workdir / "fleet", names=opts.fleet_names, certs=opts.fleet_certs,
            trials=opts.trials))
    return {name: results[name] for name in BENCHES if name in results}


def document(opts: Options, pebble: Any, benches: dict[str, Any], *, started: datetime,
             peers: dict[str, str], machine_at_start: str) -> dict[str, Any]:
    return {
        "meta": {
            "timestamp": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine_at_start,
            "machine_at_end": machine(),
            "mode": opts.mode,
            "options": asdict(opts),
            "pebble": pebble.directory_url + " (PEBBLE_VA_NOSLEEP=1, no nonce rejects, "
                                             "no authz reuse)",
            "peers": peers,
        },
        "benches": benches,
    }
