"""Bench 6, dns-01: one issuance through dns-01 against a real local DNS server, with the
http-01 figure of the same run as its floor, and a batch of wildcard certificates in one pass.

A BIND of its own (tests/support/bind.py: zone wild.test, a TSIG key for TXT records) and a
Pebble whose `-dnsserver` is that BIND (so Pebble validates what the controller wrote, and
resolves the http-01 names to 127.0.0.1 there too). Issuance time: store-only prefixes, one
per challenge type, each `njet-cert-manager reconcile` wanting one new name; the time is the
controller's own "certificate issued ... seconds=" (newOrder to the downloaded chain: for
dns-01 the RFC 2136 update and the propagation check included, process start and account
registration excluded: a warm-up run registers the account first). Median of `--dns-runs`.
Batch: `--wildcards` blocks `*.bN.wild.test` issued by one `reconcile` (concurrency
`--concurrency`); afterwards no TXT record and no pending cleanup may be left.
Goal: the dns-01 median at most 1.5 × the http-01 one. Called by bench/runner.py.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    Goal,
    acme_section,
    controller_cli,
    free_port,
    managed_blocks,
    ratio,
    summary,
    write_prefix,
)
from tests.support.bind import ACME_KEY, BindServer, txt, zone_file
from tests.support.hackmods import PebbleHarness

ZONE = "wild.test"
GOAL_RATIO = 1.5
_ISSUED = re.compile(r"certificate issued names=(\S+) .*?seconds=([\d.]+)")


def _toml(pebble: Any, bind: BindServer, secret: Path, challenge: str,
          concurrency: int) -> dict[str, dict[str, Any]]:
    return {
        "acme": {**acme_section(pebble), "challengeType": challenge},
        "njet": {"apiAddress": ""},
        "controller": {"concurrency": concurrency},
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "dns": {"provider": "rfc2136", "nameserver": bind.hostport, "tsigKeyName": ACME_KEY,
                "tsigSecretFile": str(secret), "resolvers": [bind.hostport],
                "propagationTimeout": "30s"},
        "log": {"v": 0},
    }


def _reconcile(prefix: Path, what: str) -> str:
    _, rc, out = controller_cli(prefix, "reconcile")
    if rc != 0:
        raise BenchError(f"reconcile ({what}) exited {rc}:\n{out[-3000:]}")
    return out


def issue_times(pebble: Any, bind: BindServer, root: Path, challenge: str, *, runs: int,
                tag: str) -> list[float]:
    """The controller's own issuance seconds of `runs` single-name reconciles (after one
    warm-up that registers the account)."""
    secret = bind.write_secret(root.parent / f"{challenge}.secret")
    toml = _toml(pebble, bind, secret, challenge, 1)
    times: list[float] = []
    for i in range(runs + 1):
        name = f"{challenge}{i}-{tag}.{ZONE}"
        prefix = write_prefix(root, conf=managed_blocks([name]), toml=toml)
        out = _reconcile(prefix, f"{challenge}-01, {name}")
        found = [float(s) for n, s in _ISSUED.findall(out) if n == name]
        if not found:
            raise BenchError(f"no 'certificate issued' line for {name}:\n{out[-2000:]}")
        if i:
            times.append(found[0])
    return times


def wildcard_batch(pebble: Any, bind: BindServer, root: Path, *, count: int, concurrency: int,
                   tag: str) -> dict[str, Any]:
    bases = [f"b{i}-{tag}.{ZONE}" for i in range(count)]
    secret = bind.write_secret(root.parent / "batch.secret")
    prefix = write_prefix(root, conf=managed_blocks([f"*.{b}" for b in bases]),
                          toml=_toml(pebble, bind, secret, "http", concurrency))
    started = time.perf_counter()
    _reconcile(prefix, f"{count} wildcard certificates")
    took = time.perf_counter() - started
    certs = prefix / ".lego" / "certificates"
    missing = [b for b in bases if not (certs / f"_.{b}.crt").exists()]
    if missing:
        raise BenchError(f"{len(missing)} wildcard certificates missing, e.g. {missing[:3]}")
    left = sum(1 for b in bases if txt(bind.address, f"_acme-challenge.{b}"))
    pending = (prefix / ".lego" / "dns-cleanups.json").exists()
    if left or pending:
        raise BenchError(f"after the batch: {left} TXT records left, pending file: {pending}")
    return {"certs": count, "concurrency": concurrency, "batch_seconds": round(took, 4),
            "per_cert_seconds": round(took / count, 5), "records_left": left}


def run_dns01(workdir: Path, *, runs: int, wildcards: int, concurrency: int) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    bind = BindServer(workdir / "bind", listens=[("127.0.0.1", free_port())],
                      zones={ZONE: zone_file(ZONE)}, recursive=True)
    bind.start()
    pebble = PebbleHarness(workdir / "pebble", nonce_reject_percent=0, authz_reuse_percent=0,
                           dns_server=bind.hostport)
    try:
        pebble.start()
        http = summary(issue_times(pebble, bind, workdir / "http01", "http", runs=runs,
                                   tag=tag))
        dns = summary(issue_times(pebble, bind, workdir / "dns01", "dns", runs=runs, tag=tag))
        batch = wildcard_batch(pebble, bind, workdir / "wildcards", count=wildcards,
                               concurrency=concurrency, tag=tag)
    finally:
        pebble.stop()
        bind.stop()
    to_http = ratio(dns["median"], http["median"])
    return {
        "figures": {"http01_issue_seconds": http, "dns01_issue_seconds": dns,
                    "ratio_to_http01": to_http, "wildcards": batch,
                    "dns_server": "BIND (named) " + bind.hostport},
        "goals": [Goal("dns-01 / http-01 issuance (medians)", "<=", GOAL_RATIO, to_http,
                       "×").as_dict()],
        "notes": [],
    }
