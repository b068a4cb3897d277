"""`python -m bench [--quick] [--scale N] [--only a,b] ...`: run the benchmarks, write results.

Checks the peer tools first (lego, certbot: exit 2 with the reason if one cannot run), starts
one Pebble (hack/pebble/run.py) in a temp dir, runs the benches (bench/runner.py), writes
bench/results/<UTC timestamp>.json and .md and prints the markdown. Exit 0 also when goals are
missed; 1 when a bench failed to run; 2 when a prerequisite is missing. hack/bench.sh is the
one-command wrapper (it runs hack/setup.sh first).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.common import RESULTS_DIR, BenchError, controller_program, start_pebble
from bench.report import markdown, write_results
from bench.runner import BENCHES, Options, document, machine, run_benches

QUICK = Options(runs=3, trials=3, names=10, peer_certs=2, dns_runs=3, wildcards=10,
                ari_certs=1000, fleet_names=10, fleet_certs=500)


def parse(argv: list[str] | None) -> tuple[Options, Path, bool]:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="small counts: floor 3 runs, 3 trials, 10 names, 2 certs per peer")
    p.add_argument("--only", default=",".join(BENCHES),
                   help=f"comma-separated subset of {','.join(BENCHES)}")
    p.add_argument("--runs", type=int, help="floor issuances (default 10, quick 3)")
    p.add_argument("--trials", type=int, help="time-to-served trials (default 5, quick 3)")
    p.add_argument("--names", type=int, help="throughput names (default 200, quick 10)")
    p.add_argument("--peer-certs", type=int, help="certs per peer tool (default 20, quick 2)")
    p.add_argument("--concurrency", type=int, default=16, help="[controller] concurrency")
    p.add_argument("--scale", type=int, default=10_000, help="scale blocks and certs")
    p.add_argument("--sim-servers", type=int,
                   help="simulator servers for the NJet I/O figure (default min(scale, 20000))")
    p.add_argument("--events", type=int, default=1000, help="events in the burst")
    p.add_argument("--dns-runs", type=int, help="dns01 issuances per challenge type (default 5,"
                   " quick 3)")
    p.add_argument("--wildcards", type=int, help="dns01 wildcard certificates in one pass"
                   " (default 50, quick 10)")
    p.add_argument("--ari-certs", type=int, help="ari: certificates whose polls are simulated"
                   " (default 10000, quick 1000)")
    p.add_argument("--fleet-names", type=int, help="fleet: names on 3 nodes and on one"
                   " (default 200, quick 10)")
    p.add_argument("--fleet-certs", type=int, help="fleet: certificates in the database for"
                   " the cold start (default 10000, quick 500)")
    p.add_argument("--profile", action="store_true", help="always profile the scale bench")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args(argv)
    only = tuple(s.strip() for s in a.only.split(",") if s.strip())
    unknown = sorted(set(only) - set(BENCHES))
    if unknown:
        p.error(f"unknown bench(es) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    base = QUICK if a.quick else Options()
    opts = Options(
        runs=a.runs or base.runs, trials=a.trials or base.trials, names=a.names or base.names,
        peer_certs=a.peer_certs or base.peer_certs, concurrency=a.concurrency, scale=a.scale,
        sim_servers=a.sim_servers, events=a.events, profile=a.profile, only=only,
        dns_runs=a.dns_runs or base.dns_runs, wildcards=a.wildcards or base.wildcards,
        ari_certs=a.ari_certs or base.ari_certs,
        fleet_names=a.fleet_names or base.fleet_names,
        fleet_certs=a.fleet_certs or base.fleet_certs,
        mode="quick" if a.quick else "full",
    )
    return opts, a.out, a.keep


def main(argv: list[str] | None = None) -> int:
    opts, out_dir, keep = parse(argv)
    started = datetime.now(UTC)
    at_start = machine()
    peers: dict[str, str] = {}
    try:
        controller_program()
        if "throughput" in opts.only:
            from bench.peers import peer_versions

            peers = peer_versions()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="njcm-bench-"))
    stem = out_dir / started.strftime("%Y%m%dT%H%M%SZ")
    try:
        try:
            pebble = start_pebble(workdir / "pebble")
        except Exception as exc:
            print(f"error: cannot start Pebble: {exc}", file=sys.stderr)
            return 2
        try:
            benches = run_benches(opts, pebble, workdir, stem)
            doc = document(opts, pebble, benches, started=started, peers=peers,
                           machine_at_start=at_start)
        finally:
            pebble.stop()
    finally:
        if keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    json_path, md_path = write_results(doc, stem)
    print(markdown(doc))
    print(f"results: {json_path}\n         {md_path}")
    failed = [n for n, r in benches.items() if "error" in r]
    if failed:
        print(f"error: bench(es) failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
