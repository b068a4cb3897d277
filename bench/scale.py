"""Bench 4, scale: N managed blocks and N stored certificates (default 10,000), store-only.

1. bench/scalegen.py writes the prefix (generation time reported, not judged).
2. A fresh process (bench/scale_child.py) adopts it: cold observe+plan, then the first pass,
   which writes one status file per certificate.
3. A second fresh process on the now converged prefix: cold observe+plan, the median no-op
   pass, peak RSS — these are judged: cold < 2 s, no-op < 100 ms, RSS < 150 MB (for
   N ≤ 10,000; for bigger N only the stretch goal no-op < 1 s).
4. When a goal is missed (or with --profile), a third process runs under cProfile and
   tracemalloc; the top functions and allocation sites go into the results (the pointer to the
   hot spot).
5. NJet I/O, separately: the simulator with N TLS servers (capped by `sim_servers`), its start
   time, and the median GET /api/v1/ssl, raw and through the controller's NjetClient.
Called by bench/__main__.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import pstats
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchError, Goal, free_port, render_toml, summary
from bench.scalegen import ThrowawayCA, scale_conf, sim_scale_conf, write_store

NOOP_RUNS = 5
SIM_GETS = 5
SIM_MAX_DEFAULT = 20_000


def generate(prefix: Path, n: int) -> float:
    started = time.perf_counter()
    (prefix / "conf").mkdir(parents=True, exist_ok=True)
    (prefix / "conf" / "njet.conf").write_text(scale_conf(n))
    # ari = false: no CA here (the ARI poll cost at this scale is bench/ari.py's figure)
    toml: dict[str, dict[str, Any]] = {"acme": {"email": "bench@example.test", "keyType": "ec256",
                                                "ari": False},
                                       "njet": {"apiAddress": ""},
                                       "admin": {"address": f"127.0.0.1:{free_port()}"},
                                       "log": {"v": 0}}
    (prefix / "conf" / "cert-manager.toml").write_text(render_toml(toml))
    write_store(prefix, n, ThrowawayCA())
    return time.perf_counter() - started


def run_child(prefix: Path, *, profile: Path | None = None,
              noop_runs: int = NOOP_RUNS) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.scale_child", str(prefix), "--noop-runs", str(noop_runs)]
    if profile is not None:
        cmd += ["--profile", str(profile), "--tracemalloc"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if res.returncode != 0:
        raise BenchError(f"scale child failed ({res.returncode}):\n{res.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def profile_text(stats_file: Path, *, top: int = 25) -> str:
    buf = io.StringIO()
    st = pstats.Stats(str(stats_file), stream=buf)
    st.strip_dirs()
    buf.write("== by cumulative time\n")
    st.sort_stats("cumulative").print_stats(top)
    buf.write("== by own time\n")
    st.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def hot_spots(stats_file: Path, *, top: int = 8) -> list[str]:
    """The functions with the most own time: 'file:line(func) own=…s cum=…s calls=…'."""
    st = pstats.Stats(str(stats_file))
    rows = []
    for (file, line, func), (_cc, calls, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, calls, f"{Path(file).name}:{line}({func})"))
    rows.sort(reverse=True)
    return [f"{where} own={tt:.3f}s cum={ct:.3f}s calls={calls}"
            for tt, ct, calls, where in rows[:top]]


# -- NJet I/O ----------------------------------------------------------------------------------


def measure_njet_io(workdir: Path, n: int) -> dict[str, Any]:
    from controller.adapters.njet.api import NjetClient
    from tests.support.njetsim import NjetSim, ec_cert, layout

    crt, key = ec_cert(["scale.test"], "bench-scale")
    prefix, ports = layout(workdir / "sim", sim_scale_conf(n),
                           files={"conf/certs/scale.crt": crt, "conf/certs/scale.key": key})
    sim = NjetSim(prefix, ports=ports, replay_delay=0.1, event_delay=0.1)
    started = time.perf_counter()
    try:
        sim.start(timeout=max(60.0, n * 0.02))
        start_seconds = time.perf_counter() - started
        raw: list[float] = []
        size = 0
        for _ in range(SIM_GETS):
            t = time.perf_counter()
            with urllib.request.urlopen(sim.api_url + "/api/v1/ssl", timeout=120) as r:
                size = len(r.read())
            raw.append(time.perf_counter() - t)

        async def parsed() -> tuple[list[float], int]:
            times: list[float] = []
            count = 0
            async with NjetClient(sim.api_url, timeout=120) as client:
                for _ in range(SIM_GETS):
                    t = time.perf_counter()
                    count = len(await client.get_ssl())
                    times.append(time.perf_counter() - t)
            return times, count

        client_times, count = asyncio.run(parsed())
    finally:
        try:
            sim.quit(timeout=120)
        except Exception:
            sim.kill()
    if count != n:
        raise BenchError(f"the simulator listed {count} servers, expected {n}")
    return {
        "sim_servers": n,
        "sim_start_seconds": round(start_seconds, 3),
        "get_ssl_bytes": size,
        "get_ssl_raw_seconds": summary(raw),
        "get_ssl_njetclient_seconds": summary(client_times),
    }


# -- the bench ---------------------------------------------------------------------------------


def run_scale(workdir: Path, *, n: int, results_stem: Path, profile: bool = False,
              sim_servers: int | None = None) -> dict[str, Any]:
    prefix = workdir / f"scale-{n}"
    gen_seconds = generate(prefix, n)
    adopt = run_child(prefix)
    steady = run_child(prefix)
    for run in (adopt, steady):
        if run["blocks"] != n or run["stored"] != n or run["store_problems"]:
            raise BenchError(f"scale fixture not as generated: {run}")
    if steady["cold_actions"] or steady["noop_actions"]:
        raise BenchError(f"a converged prefix still plans actions: {steady}")
    if n <= 10_000:
        goals = [
            Goal("cold observe+plan", "<", 2.0, steady["cold_seconds"], "s"),
            Goal("no-op pass", "<", 0.1, steady["noop_seconds"], "s"),
            Goal("peak RSS", "<", 150.0, steady["peak_rss_mb"], "MB"),
        ]
    else:
        goals = [Goal("no-op pass (stretch)", "<", 1.0, steady["noop_seconds"], "s")]
    notes = [f"{n} blocks, {n} stored certs sharing a few EC keys; RSS of a fresh process "
             "that only imports the controller and runs it"]
    figures: dict[str, Any] = {
        "n": n,
        "generate_seconds": round(gen_seconds, 2),
        "adopt": adopt,
        "steady": steady,
    }
    missed = [g for g in goals if not g.met]
    if profile or missed:
        stats_file = results_stem.with_name(results_stem.name + f"-scale{n}.pstats")
        stats_file.parent.mkdir(parents=True, exist_ok=True)
        profiled = run_child(prefix, profile=stats_file)
        text_file = stats_file.with_suffix(".txt")
        text_file.write_text(profile_text(stats_file))
        figures["profile"] = {"file": str(text_file), "top_own_time": hot_spots(stats_file),
                              "top_allocations": profiled.get("top_allocations", [])}
        notes.append(f"cProfile of cold + no-op passes and tracemalloc: {text_file}")
    sim_n = sim_servers if sim_servers is not None else min(n, SIM_MAX_DEFAULT)
    figures["njet_io"] = measure_njet_io(workdir, sim_n)
    if sim_n < n:
        notes.append(f"NJet I/O measured with {sim_n} simulator servers, not {n} "
                     f"(sim start grows ~linearly: ~2.6 s per 1,000 servers)")
    return {"figures": figures, "goals": [g.as_dict() for g in goals], "notes": notes}
