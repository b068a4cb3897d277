"""Results: bench/results/<UTC timestamp>.json and .md, and the markdown table printed.

`write_results(results, out_dir, stem)` is called by bench/__main__.py with the dict of every
bench's result ({"figures", "goals", "notes"} or {"error"}); `markdown(results)` renders the
headline figures of each bench, then every goal with its verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = tuple[str, str]


def _s(v: float) -> str:
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _stats(d: dict[str, Any]) -> str:
    return f"median {_s(d['median'])}, min {_s(d['min'])} (n={d['n']})"


def _floor(f: dict[str, Any]) -> list[Row]:
    return [("one issuance, bare acme", _stats(f["issue_seconds"]))]


def _served(f: dict[str, Any]) -> list[Row]:
    rows = [("event → cert served", _stats(f["served_seconds"])),
            ("ratio to the floor (medians)", f"{f['ratio_to_floor']:.2f}×")]
    marks = f.get("marks_median_seconds") or {}
    if marks:
        rows.append(("steps after the HTTP call (medians, from the controller's log)",
                     ", ".join(f"{k} {_s(v)}" for k, v in marks.items())))
    return rows


def _throughput(f: dict[str, Any]) -> list[Row]:
    c = f["controller"]
    rows = [(f"controller, {c['names']} names, concurrency {c['concurrency']}",
             f"{_s(c['per_cert_seconds'])}/cert ({_s(c['batch_seconds'])} total)")]
    if "acme_parallel" in f:
        a = f["acme_parallel"]
        rows.append(("bare acme, same names and concurrency (Pebble's pace here)",
                     f"{_s(a['per_cert_seconds'])}/cert"))
    for tool in ("lego", "certbot"):
        p = f[tool]
        rows.append((f"{tool}, one process per cert ({p['certs']} certs)",
                     f"{_s(p['per_cert_seconds'])}/cert → controller "
                     f"{p['controller_speedup_per_cert']:.1f}× faster"))
    rows.append(("cold start, one cert",
                 ", ".join(f"{t} {_s(f[t]['cold_one_cert_seconds'])}"
                           for t in ("controller", "lego", "certbot"))))
    return rows


def _scale(f: dict[str, Any]) -> list[Row]:
    st, ad, io = f["steady"], f["adopt"], f["njet_io"]
    rows = [
        (f"fixtures: {f['n']} blocks + certs generated", _s(f["generate_seconds"])),
        ("cold observe+plan (fresh process, converged)",
         f"{_s(st['cold_seconds'])} (conf parse {_s(st['parse_conf_seconds'])}, store load "
         f"{_s(st['load_store_seconds'])}; imports {_s(st['import_seconds'])})"),
        ("no-op pass (median)", _s(st["noop_seconds"])),
        ("peak RSS", f"{st['peak_rss_mb']:.0f} MB ({st['rss_after_imports_mb']:.0f} MB after "
                     "imports)"),
        ("adoption: cold / first pass (writes status files)",
         f"{_s(ad['cold_seconds'])} / {_s(ad['first_pass_seconds'])}"),
        (f"NJet GET /api/v1/ssl, {io['sim_servers']} servers ({io['get_ssl_bytes']} bytes)",
         f"raw {_s(io['get_ssl_raw_seconds']['median'])}, NjetClient "
         f"{_s(io['get_ssl_njetclient_seconds']['median'])} (sim start "
         f"{_s(io['sim_start_seconds'])})"),
    ]
    for line in (f.get("profile") or {}).get("top_own_time", [])[:4]:
        rows.append(("hot spot (cProfile own time)", line))
    for line in (f.get("profile") or {}).get("top_allocations", [])[:3]:
        rows.append(("memory (tracemalloc)", line))
    return rows


def _events(f: dict[str, Any]) -> list[Row]:
    return [(f"{f['events']} events in a burst", f"published in {_s(f['publish_seconds'])}"),
            ("reconciles", str(f["reconciles"])),
            ("until quiet", _s(f["seconds_until_quiet"])),
            ("in sync after", "yes" if f["in_sync_after"] else "NO")]


def _dns01(f: dict[str, Any]) -> list[Row]:
    w = f["wildcards"]
    return [("one issuance through http-01 (the floor of this bench)",
             _stats(f["http01_issue_seconds"])),
            ("one issuance through dns-01 (RFC 2136 to BIND, propagation checked)",
             f"{_stats(f['dns01_issue_seconds'])}; {f['ratio_to_http01']:.2f}× http-01"),
            (f"{w['certs']} wildcard certificates in one pass, concurrency {w['concurrency']}",
             f"{_s(w['batch_seconds'])} ({_s(w['per_cert_seconds'])}/cert), "
             f"{w['records_left']} TXT records left")]


def _ari(f: dict[str, Any]) -> list[Row]:
    c, r = f["poll_cost"], f["revoked"]
    gap = c["hours_between_polls_of_a_cert"]
    return [(f"ARI polls for {c['certificates']} certificates (steady state, simulated)",
             f"{c['steady_requests_per_hour']:.0f}/h; {gap['min']:.2f}–{gap['max']:.2f} h "
             f"between two polls of one ({c['polls_per_cert_per_interval']:.2f} per 6 h)"),
            ("ARI: most requests in one pass / in any minute; passes per hour",
             f"{c['max_requests_per_pass']} / {c['max_requests_per_minute']}; "
             f"{c['passes_per_hour']:.0f} (first round {c['first_round_hours']:.1f} h; "
             f"step {_s(c['step_cpu_seconds_per_pass'])} CPU per pass)"),
            ("window moved into the past → renewed (moved right after a poll)",
             f"after {r['delay_seconds']['median'] / 3600:.2f} h (simulated, next poll) + "
             f"{_s(r['renewal_seconds']['median'])} (poll + issuance, n={r['trials']})")]


def _fleet(f: dict[str, Any]) -> list[Row]:
    three, one, cold = f["three_nodes"], f["one_node"], f["cold"]
    ren = three["renewal"]
    fl, fi, full = cold["postgres"], cold["file"], cold["postgres_restart_mirror_full"]
    return [(f"{three['names']} names on 3 nodes: orders issued (Pebble's log)",
             str(three["orders"])),
            ("until every node serves every name: 3 nodes / 1 node",
             f"{_s(three['all_served_seconds'])} / {_s(one['all_served_seconds'])} → "
             f"{f['three_over_one']:.2f}×"),
            (f"forced renewal stored → the other 2 nodes serve it (n={ren['trials']})",
             f"{_stats(ren['propagation_seconds'])}; from the request "
             f"{_s(ren['request_to_served_seconds']['median'])}"),
            (f"cold start, {cold['n']} certs: new node (pulls all) / file backend",
             f"{_s(fl['cold_seconds'])} / {_s(fi['cold_seconds'])} "
             f"({f['cold_ratio_to_file']:.1f}×); restart, mirror full {_s(full['cold_seconds'])};"
             f" file, first load (writes its index) {_s(fi['first_load_seconds'])}"),
            (f"no-op compute, {cold['n']} certs: fleet / file (medians)",
             f"{_s(fl['noop_seconds']['median'])} / {_s(fi['noop_seconds']['median'])} "
             f"({f['noop_ratio_to_file']:.2f}×)"),
            (f"store migrate --from file --to postgres, {cold['n']} certs",
             _s(cold["migrate_seconds"]))]


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "floor": _floor, "served": _served, "throughput": _throughput, "scale": _scale,
    "events": _events, "dns01": _dns01, "ari": _ari, "fleet": _fleet,
}


def markdown(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    out = [f"# njet-cert-manager benchmarks, {meta['timestamp']}", "",
           f"{meta['machine']}; mode: {meta['mode']}; Pebble {meta['pebble']}", ""]
    if meta.get("peers"):
        out += ["peers: " + "; ".join(f"{k} {v}" for k, v in meta["peers"].items()), ""]
    out += ["| bench | figure | value |", "|---|---|---|"]
    goals: list[tuple[str, dict[str, Any]]] = []
    for name, res in doc["benches"].items():
        if "error" in res:
            out.append(f"| {name} | **error** | {res['error'].splitlines()[0][:200]} |")
            continue
        for figure, value in ROWS[name](res["figures"]):
            out.append(f"| {name} | {figure} | {value} |")
        goals += [(name, g) for g in res["goals"]]
    if goals:
        out += ["", "| bench | goal | value | verdict |", "|---|---|---|---|"]
        for name, g in goals:
            verdict = "met" if g["met"] else "**missed**"
            out.append(f"| {name} | {g['figure']} {g['op']} {g['target']:g}{g['unit']} | "
                       f"{g['value']:g}{g['unit']} | {verdict} |")
    notes = [(n, note) for n, r in doc["benches"].items() for note in r.get("notes", [])]
    if notes:
        out += ["", "Notes:"] + [f"- {n}: {note}" for n, note in notes]
    return "\n".join(out) + "\n"


def write_results(doc: dict[str, Any], stem: Path) -> tuple[Path, Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    md_path.write_text(markdown(doc))
    return json_path, md_path
