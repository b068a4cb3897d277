"""Bench 3, throughput: seconds per certificate, the controller vs lego vs certbot.

Controller: N managed blocks (one name each) in a generated njet.conf, store-only mode,
`[controller] concurrency` as given, all issued by one `njet-cert-manager reconcile` process
(process start and account registration included); per cert = wall time / N. Peers: one
process per certificate, sequentially, sharing one state directory (bench/peers.py); their
per-cert time is flat, so a few suffice; per cert = total / count. Cold start: one certificate
from a fresh state directory for each tool, process start and account registration included.
Goals: ≥ 30× faster per cert than certbot, ≥ 100× than lego. Context (no goal): the same
names issued by bare `acme` on as many threads (bench/floor.py), i.e. what Pebble and one
Python process allow on this machine. Called by bench/__main__.py.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    Goal,
    controller_cli,
    managed_blocks,
    ratio,
    store_only_toml,
    summary,
    tail,
    wait_port_free,
    write_prefix,
)
from bench.floor import parallel_issue
from bench.peers import PEERS, run_peer

GOALS = {"certbot": 30.0, "lego": 100.0}


def controller_batch(pebble: Any, root: Path, names: list[str], *,
                     concurrency: int) -> float:
    """Seconds of one `reconcile` issuing every name of a fresh store-only prefix."""
    wait_port_free(pebble.http_port)
    prefix = write_prefix(root, conf=managed_blocks(names),
                          toml=store_only_toml(pebble, concurrency=concurrency))
    took, rc, out = controller_cli(prefix, "reconcile")
    if rc != 0:
        raise BenchError(f"njet-cert-manager reconcile exited {rc} for {len(names)} names:\n"
                         + out[-3000:] + tail(prefix / "logs" / "controller.log"))
    stored = {p.stem for p in (prefix / ".lego" / "certificates").glob("*.crt")
              if not p.name.endswith(".issuer.crt")}
    missing = sorted(set(names) - stored)
    if missing:
        raise BenchError(f"reconcile exited 0 but {len(missing)} certificates are missing, "
                         f"e.g. {missing[:3]}")
    return took


def run_throughput(pebble: Any, workdir: Path, *, names: int, peer_certs: int,
                   concurrency: int) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    batch_names = [f"t{i}-{tag}.bench.test" for i in range(names)]
    batch = controller_batch(pebble, workdir / "controller-batch", batch_names,
                             concurrency=concurrency)
    cold = controller_batch(pebble, workdir / "controller-cold", [f"cold-{tag}.bench.test"],
                            concurrency=concurrency)
    ours = batch / names
    bare = parallel_issue(pebble, names=names, concurrency=concurrency)
    figures: dict[str, Any] = {
        "controller": {
            "names": names,
            "concurrency": concurrency,
            "batch_seconds": round(batch, 4),
            "per_cert_seconds": round(ours, 5),
            "cold_one_cert_seconds": round(cold, 4),
        },
        "acme_parallel": {
            "names": names,
            "concurrency": concurrency,
            "batch_seconds": round(bare, 4),
            "per_cert_seconds": round(bare / names, 5),
            "controller_ratio": ratio(ours, bare / names),
        },
    }
    goals: list[dict[str, Any]] = []
    for tool in PEERS:
        state = workdir / tool
        state.mkdir(parents=True, exist_ok=True)
        cold_times = run_peer(tool, pebble, state, [f"{tool}-cold-{tag}.bench.test"])
        times = run_peer(tool, pebble, state,
                         [f"{tool}{i}-{tag}.bench.test" for i in range(peer_certs)])
        stats = summary(times)
        per_cert = sum(times) / len(times)
        speedup = ratio(per_cert, ours)
        figures[tool] = {
            "certs": peer_certs,
            "per_cert_seconds": round(per_cert, 4),
            "per_process": stats,
            "cold_one_cert_seconds": round(cold_times[0], 4),
            "controller_speedup_per_cert": speedup,
        }
        goals.append(Goal(f"per cert: {tool} / controller", ">=", GOALS[tool], speedup,
                          "x").as_dict())
    return {
        "figures": figures,
        "goals": goals,
        "notes": ["controller: one `reconcile` process for all names (store-only); peers: one "
                  "process per cert, state dir shared after the cold run"],
    }
