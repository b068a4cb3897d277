"""deploy/'s Grafana dashboard and Prometheus rules against a live /metrics (issue 12 item 5).

A controller's backend over the fakes (real plan, execute and fold; the backend as the pass
observer and the ACME observer, as service.py wires them) runs passes that leave every series
populated: an issued, applied, probed and renewed certificate, and one whose issuance fails.
Its real admin server is scraped over HTTP and parsed with prometheus_client's text parser.
Every metric named by a dashboard expression or a rule must be in that scrape with samples
(Prometheus's own `up` and the rules' recorded names aside). promtool (Debian's prometheus
package; hack/setup.sh installs it) checks the rules and the example config, runs the rules'
unit tests (deploy/prometheus/tests.yml), and parses every dashboard expression as PromQL.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.admin.server import start_admin
from controller.admin_backend import ControllerBackend
from controller.errors import TemporaryError
from controller.metrics import ControllerMetrics
from controller.reconcile import Loop
from tests.fixtures.programs import require_program
from tests.unit.test_reconcile_loop import A, B, world

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "njet-cert-manager.json"
RULES = ROOT / "deploy" / "prometheus" / "njet-cert-manager.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests.yml"
PROM_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

PROMETHEUS_OWN = frozenset({"up"})  # written by Prometheus itself, never by /metrics

# -- metric names in a PromQL expression ----------------------------------------------------

_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on",
                       "ignoring", "group_left", "group_right", "inf", "nan", "atan2"})
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARS = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)?[^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects: identifiers left once strings, Grafana variables,
    label matchers, ranges and grouping clauses are gone, that are not function calls
    (followed by "("), keywords or numbers. Grafana's label_values(metric, label) names its
    metric only."""
    names = {m.group(1) for m in _LABEL_VALUES.finditer(expr) if m.group(1)}
    expr = _LABEL_VALUES.sub(" ", expr)
    for pattern in (_STRINGS, _GRAFANA_VARS, _MATCHERS, _RANGES, _GROUPING):
        expr = pattern.sub(" ", expr)
    names |= {m.group(1) for m in _IDENT.finditer(expr)}
    return {n for n in names if n.lower() not in _KEYWORDS}


def test_the_name_extractor_finds_metrics_and_only_metrics() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, job) (rate(x_seconds_bucket{job=~"$job", '
        'name="a(b)"}[$__rate_interval]))) / ignoring(le) group_left y_total offset 5m'
    ) == {"x_seconds_bucket", "y_total"}
    assert metric_names("time() - a_ts > 3600 and on (name) b == bool 0 or vector(0)") == {
        "a_ts", "b"}
    assert metric_names('label_values(njcm_x{job=~"$job"}, name)') == {"njcm_x"}
    assert metric_names("1e3 * c:recorded:rate5m unless d") == {"c:recorded:rate5m", "d"}


# -- the artefacts' expressions ---------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def dashboard_exprs() -> dict[str, str]:
    """Every expression in the dashboard, by where it is ("panel title / refId")."""
    d = dashboard()
    out = {f"{p['title']} / {t['refId']}": t["expr"]
           for p in panels(d) for t in p.get("targets", [])}
    for v in d["templating"]["list"]:
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        out[f"variable ${v['name']}"] = query
    return out


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [r for g in loaded["groups"] for r in g["rules"]]


def rule_exprs() -> dict[str, str]:
    return {r.get("alert") or r["record"]: r["expr"] for r in rules()}


# -- a live /metrics ----------------------------------------------------------------------------


async def _scrape() -> str:
    w = world(A)
    metrics = ControllerMetrics()
    backend = ControllerBackend(reconciler=w.rec, loop=Loop(w.rec, timedelta(hours=1)),
                                metrics=metrics, mqtt_state={"connected": True})
    w.rec.observer = backend
    w.rec.executor.on_acme = metrics.observe_acme_request
    metrics.set_mqtt_connected(True)
    await w.rec.converge(probe=True)  # a.test issued, applied, verified by a handshake
    w.clock.advance(timedelta(days=61))
    await w.rec.pass_once(probe=True)  # probed (a match), then renewed and applied
    w.desired.specs = [A, B]
    w.issuer.fail = [TemporaryError("CA unreachable")]
    await w.rec.pass_once()  # b.test's issuance fails: failing, not ready, in backoff
    srv = await start_admin(backend, "127.0.0.1:0", "")
    try:
        await asyncio.wait_for(srv.wait_bound(), 5)
        async with aiohttp.ClientSession() as s, \
                s.get(f"http://127.0.0.1:{srv.port}/metrics") as r:
            assert r.status == 200
            return await r.text()
    finally:
        await srv.stop()


@pytest.fixture(scope="module")
def live() -> set[str]:
    """The names of the scrape's samples: what a query can select (a counter as x_total, a
    histogram as x_bucket, x_sum and x_count; never the bare family name of either)."""
    text = asyncio.run(_scrape())
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def unknown(exprs: dict[str, str], live: set[str], *, also: frozenset[str] = frozenset()
            ) -> dict[str, set[str]]:
    out = {where: metric_names(e) - live - PROMETHEUS_OWN - also for where, e in exprs.items()}
    return {where: names for where, names in out.items() if names}


def test_the_scrape_has_every_new_series(live: set[str]) -> None:
    assert {"njcm_actions_total", "njcm_certificate_renewals_total", "njcm_njet_apply_total",
            "njcm_njet_verify_total", "njcm_certificate_served_matches_stored",
            "njcm_certificate_failing_since_timestamp_seconds",
            "njcm_acme_client_request_duration_seconds_bucket"} <= live


def test_every_metric_the_dashboard_names_is_in_a_live_scrape(live: set[str]) -> None:
    exprs = dashboard_exprs()
    named = set().union(*(metric_names(e) for e in exprs.values()))
    # what the dashboard is for: expiry, renewals, failures, ACME, NJet, served, loop, MQTT
    assert {"njcm_certificate_expiration_timestamp_seconds", "njcm_certificate_renewals_total",
            "njcm_actions_total", "njcm_acme_client_requests_total",
            "njcm_acme_client_request_duration_seconds_bucket", "njcm_njet_apply_total",
            "njcm_njet_verify_total", "njcm_certificate_served_matches_stored",
            "njcm_certificate_failing_since_timestamp_seconds",
            "njcm_reconcile_duration_seconds_bucket", "njcm_mqtt_connected"} <= named
    assert unknown(exprs, live) == {}


def test_every_metric_the_rules_name_is_in_a_live_scrape(live: set[str]) -> None:
    recorded = frozenset(r["record"] for r in rules() if "record" in r)
    assert unknown(rule_exprs(), live, also=recorded) == {}


def test_an_unknown_metric_is_reported_where_it_is_named(live: set[str]) -> None:
    exprs = {"typo": "njcm_certificate_expiry_timestamp_seconds - time() < 7 * 86400",
             "fine": "njcm_reconciles_total"}
    assert unknown(exprs, live) == {"typo": {"njcm_certificate_expiry_timestamp_seconds"}}
    # a counter is selected by its _total name, a histogram by its _bucket/_sum/_count
    assert unknown({"bare": "rate(njcm_reconciles[5m]) + njcm_reconcile_duration_seconds"},
                   live) == {"bare": {"njcm_reconciles", "njcm_reconcile_duration_seconds"}}


def test_every_alert_says_which_certificate_or_instance_in_its_annotations() -> None:
    alerts = [r for r in rules() if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "NjcmCertificateExpiringSoon", "NjcmCertificateRenewalFailing",
        "NjcmCertificateServedNotStored", "NjcmControllerDown"}
    for a in alerts:
        per_cert = any(n.startswith("njcm_certificate_") for n in metric_names(a["expr"]))
        label = "{{ $labels.name }}" if per_cert else "{{ $labels.instance }}"
        for key in ("summary", "description"):
            assert label in a["annotations"][key], (a["alert"], key)
        assert a["labels"]["severity"] in ("warning", "critical"), a["alert"]


# -- the dashboard's shape ----------------------------------------------------------------------


def test_the_dashboard_imports_anywhere_through_its_datasource_input() -> None:
    d = dashboard()
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    assert d["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids))
    queried = [p for p in panels(d) if p["type"] != "row"]
    assert queried and all(p.get("targets") for p in queried)
    for p in queried:
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            assert t["expr"].strip(), p["title"]
    for v in d["templating"]["list"]:
        assert v["datasource"]["uid"] == "${DS_PROMETHEUS}", v["name"]
    for p in panels(d):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]


# -- promtool ------------------------------------------------------------------------------------


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = require_program("promtool", "/usr/bin/promtool")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_promtool_checks_the_rules_and_the_example_config() -> None:
    rules_run = promtool("check", "rules", str(RULES))
    assert rules_run.returncode == 0, rules_run.stdout + rules_run.stderr
    assert f"SUCCESS: {len(rules())} rules found" in rules_run.stdout
    config_run = promtool("check", "config", "--syntax-only", str(PROM_CONFIG))
    assert config_run.returncode == 0, config_run.stdout + config_run.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    """tests.yml: expiring in < 7 days fires for 6 days out and not for 8; failing > 1 h;
    served != stored for 10 min; the controller down for 5 min — annotations naming the
    certificate (or the instance) included."""
    run = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout
    alerts = {r["alert"] for r in rules() if "alert" in r}
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    assert alerts == tested


_SAMPLE_VALUES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def test_every_dashboard_expression_parses_as_promql(tmp_path: Path) -> None:
    """Each panel expression (Grafana's variables given sample values) as a recording rule:
    promtool parses them all."""
    records = []
    for i, (where, expr) in enumerate(sorted(dashboard_exprs().items())):
        if where.startswith("variable "):
            continue  # label_values() is Grafana's, not PromQL
        for var, sample in _SAMPLE_VALUES.items():
            expr = expr.replace(var, sample)
        expr = re.sub(r"\$\{?\w+\}?", ".*", expr)  # $job, $name: regex matchers
        records.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    run = promtool("check", "rules", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(records)} rules found" in run.stdout
