"""Smoke test of the benchmarks (bench/): every bench runs once at tiny sizes against a real
Pebble, the NJet simulator and the real peer tools, and reports every figure and goal.

Checks the shape of the results only, never the timings.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.common import start_pebble
from bench.peers import peer_versions
from bench.report import markdown, write_results
from bench.runner import BENCHES, Options, document, machine, run_benches
from bench.served import MARKS

pytestmark = pytest.mark.pebble

TINY = Options(runs=1, trials=1, names=2, peer_certs=1, concurrency=4, scale=200,
               sim_servers=200, events=50, dns_runs=1, wildcards=2, ari_certs=200,
               fleet_names=1, fleet_certs=20, mode="smoke")


@pytest.fixture(scope="module")
def bench_pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    harness = start_pebble(tmp_path_factory.mktemp("bench-pebble"))
    try:
        yield harness
    finally:
        harness.stop()


def positive(d: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = d[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)


def check_goals(res: dict[str, Any]) -> None:
    assert res["goals"], "a judged bench lists its goals"
    for goal in res["goals"]:
        assert isinstance(goal["met"], bool)
        assert {"figure", "op", "target", "value", "unit"} <= goal.keys()


def test_every_bench_runs_once_and_reports_every_figure(bench_pebble: Any,
                                                        tmp_path: Path) -> None:
    peers = peer_versions()
    assert set(peers) == {"lego", "certbot"} and all(peers.values())
    started = datetime.now(UTC)
    # the simulator's broker socket must fit the 107 bytes of a unix socket path, which a
    # pytest-xdist tmp_path may not leave room for
    work = Path(tempfile.mkdtemp(prefix="njcm-bench-", dir="/tmp"))
    try:
        benches = run_benches(TINY, bench_pebble, work, tmp_path / "results" / "smoke")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    assert list(benches) == list(BENCHES)
    assert not {n: r["error"] for n, r in benches.items() if "error" in r}

    floor = benches["floor"]["figures"]
    positive(floor["issue_seconds"], "median", "min")
    assert floor["issue_seconds"]["n"] == 1

    served = benches["served"]["figures"]
    positive(served["served_seconds"], "median")
    positive(served, "ratio_to_floor", "floor_median_seconds")
    assert set(served["marks_median_seconds"]) == set(MARKS)
    check_goals(benches["served"])

    tp = benches["throughput"]["figures"]
    positive(tp["controller"], "batch_seconds", "per_cert_seconds", "cold_one_cert_seconds")
    positive(tp["acme_parallel"], "per_cert_seconds")
    for tool in ("lego", "certbot"):
        positive(tp[tool], "per_cert_seconds", "cold_one_cert_seconds",
                 "controller_speedup_per_cert")
        assert tp[tool]["certs"] == 1
    assert {g["figure"] for g in benches["throughput"]["goals"]} == {
        "per cert: lego / controller", "per cert: certbot / controller"}

    scale = benches["scale"]["figures"]
    for run in (scale["adopt"], scale["steady"]):
        assert run["blocks"] == run["stored"] == 200
        positive(run, "cold_seconds", "noop_seconds", "first_pass_seconds", "peak_rss_mb",
                 "parse_conf_seconds", "load_store_seconds")
        assert run["noop_actions"] == 0
    assert scale["njet_io"]["sim_servers"] == 200
    positive(scale["njet_io"]["get_ssl_njetclient_seconds"], "median")
    positive(scale["njet_io"]["get_ssl_raw_seconds"], "median")
    check_goals(benches["scale"])

    events = benches["events"]["figures"]
    assert events["events"] == 50
    positive(events, "reconciles", "seconds_until_quiet", "publish_seconds")
    assert isinstance(events["in_sync_after"], bool)
    check_goals(benches["events"])

    dns01 = benches["dns01"]["figures"]
    positive(dns01["http01_issue_seconds"], "median")
    positive(dns01["dns01_issue_seconds"], "median")
    positive(dns01, "ratio_to_http01")
    assert dns01["wildcards"]["certs"] == 2 and dns01["wildcards"]["records_left"] == 0
    positive(dns01["wildcards"], "batch_seconds", "per_cert_seconds")
    check_goals(benches["dns01"])

    ari = benches["ari"]["figures"]
    cost = ari["poll_cost"]
    assert cost["certificates"] == 200 and cost["requests"] > 200
    positive(cost, "steady_requests_per_hour", "max_requests_per_pass", "passes_per_hour",
             "first_round_hours", "polls_per_cert_per_interval")
    positive(cost["hours_between_polls_of_a_cert"], "min", "mean", "max")
    assert ari["revoked"]["trials"] == 1
    positive(ari["revoked"]["delay_seconds"], "median")
    positive(ari["revoked"]["renewal_seconds"], "median")
    check_goals(benches["ari"])

    fleet = benches["fleet"]["figures"]
    three, one = fleet["three_nodes"], fleet["one_node"]
    assert (three["nodes"], three["names"], one["nodes"], one["names"]) == (3, 1, 1, 1)
    positive(three, "all_served_seconds", "orders")
    positive(one, "all_served_seconds", "orders")
    positive(fleet, "three_over_one", "cold_ratio_to_file", "noop_ratio_to_file")
    assert three["renewal"]["trials"] == 1
    positive(three["renewal"]["propagation_seconds"], "median")
    positive(three["renewal"]["request_to_served_seconds"], "median")
    cold = fleet["cold"]
    assert cold["n"] == 20
    positive(cold, "generate_seconds", "migrate_seconds")
    positive(cold["file"], "first_load_seconds")
    for run in (cold["file"], cold["postgres"], cold["postgres_restart_mirror_full"]):
        assert run["stored"] == 20 and run["noop_actions"] == 0
        positive(run, "cold_seconds")
        positive(run["noop_seconds"], "median")
    check_goals(benches["fleet"])

    doc = document(TINY, bench_pebble, benches, started=started, peers=peers,
                   machine_at_start=machine())
    json_path, md_path = write_results(doc, tmp_path / "results" / "smoke")
    assert json_path.exists() and md_path.read_text() == markdown(doc)
    text = md_path.read_text()
    for name in BENCHES:
        assert f"| {name} |" in text
    assert "**error**" not in text
