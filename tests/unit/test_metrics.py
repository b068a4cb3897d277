"""controller.metrics: output parsed with prometheus_client's own text parser."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from controller.metrics import AcmeOutcome, ControllerMetrics, Registry


def families(text: str) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_label_values_and_help_are_escaped_so_the_parser_reads_them_back() -> None:
    reg = Registry()
    g = reg.gauge("t_gauge", 'help with \\ backslash\nand newline "quoted"', ("name",))
    tricky = 'a"b\\c\nd'
    g.set(2.5, name=tricky)
    fams = families(reg.render())
    fam = fams["t_gauge"]
    assert fam.type == "gauge"
    assert fam.documentation == 'help with \\ backslash\nand newline "quoted"'
    assert fam.samples[0].labels == {"name": tricky}
    assert fam.samples[0].value == 2.5


def test_every_metric_has_help_and_type_lines() -> None:
    text = ControllerMetrics().render()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    helps = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    assert names == helps
    assert "njcm_reconciles_total" in names and "njcm_mqtt_connected" in names


def test_counters_and_histograms_accumulate() -> None:
    reg = Registry()
    c = reg.counter("t_events_total", "events", ("kind",))
    h = reg.histogram("t_seconds", "durations", buckets=(0.1, 1.0))
    c.inc(kind="x")
    c.inc(2, kind="x")
    for v in (0.05, 0.5, 5.0):
        h.observe(v)
    s = samples(reg.render())
    assert s[("t_events_total", (("kind", "x"),))] == 3
    assert s[("t_seconds_bucket", (("le", "0.1"),))] == 1
    assert s[("t_seconds_bucket", (("le", "1.0"),))] == 2
    assert s[("t_seconds_bucket", (("le", "+Inf"),))] == 3
    assert s[("t_seconds_count", ())] == 3
    assert math.isclose(s[("t_seconds_sum", ())], 5.55)


def test_misuse_is_rejected() -> None:
    reg = Registry()
    c = reg.counter("t_total", "x", ("a",))
    with pytest.raises(ValueError, match="labels"):
        c.inc(b="1")
    with pytest.raises(ValueError, match="decrease"):
        c.inc(-1, a="1")
    with pytest.raises(ValueError, match="already registered"):
        reg.gauge("t_total", "again")
    with pytest.raises(ValueError, match="invalid metric name"):
        reg.gauge("bad-name", "x")


def test_controller_metrics_report_certificates_acme_reconciles_and_mqtt() -> None:
    m = ControllerMetrics()
    nb = datetime(2026, 1, 1, tzinfo=UTC)
    na = nb + timedelta(days=90)
    m.set_certificate("a.test", not_before=nb, not_after=na, renewal_at=na - timedelta(days=30))
    m.set_certificate_ready("a.test", True)
    m.set_certificate("b.test", not_before=nb, not_after=na)
    m.set_certificate_ready("b.test", False)
    m.observe_acme_request(AcmeOutcome.SUCCESS, 1.2)
    m.observe_acme_request(AcmeOutcome.TEMPORARY_ERROR, 0.3)
    m.observe_reconcile(0.02, failed=False)
    m.observe_reconcile(0.5, failed=True)
    m.set_mqtt_connected(True)
    s = samples(m.render())
    a = (("name", "a.test"),)
    assert s[("njcm_certificate_not_before_timestamp_seconds", a)] == nb.timestamp()
    assert s[("njcm_certificate_expiration_timestamp_seconds", a)] == na.timestamp()
    assert (
        s[("njcm_certificate_renewal_timestamp_seconds", a)]
        == (na - timedelta(days=30)).timestamp()
    )
    assert ("njcm_certificate_renewal_timestamp_seconds", (("name", "b.test"),)) not in s
    assert s[("njcm_certificate_ready_status", (("condition", "True"), ("name", "a.test")))] == 1
    assert s[("njcm_certificate_ready_status", (("condition", "False"), ("name", "a.test")))] == 0
    assert s[("njcm_certificate_ready_status", (("condition", "False"), ("name", "b.test")))] == 1
    assert s[("njcm_acme_client_requests_total", (("outcome", "success"),))] == 1
    assert s[("njcm_acme_client_requests_total", (("outcome", "temporary_error"),))] == 1
    assert s[("njcm_acme_client_request_duration_seconds_count", ())] == 2
    assert s[("njcm_reconciles_total", ())] == 2
    assert s[("njcm_reconcile_failures_total", ())] == 1
    assert s[("njcm_reconcile_duration_seconds_count", ())] == 2
    assert s[("njcm_mqtt_connected", ())] == 1
    fams = families(m.render())
    assert fams["njcm_reconciles"].type == "counter"
    assert fams["njcm_reconcile_duration_seconds"].type == "histogram"


def test_dropping_a_certificate_removes_all_its_series_and_only_those() -> None:
    m = ControllerMetrics()
    t = datetime(2026, 1, 1, tzinfo=UTC)
    for name in ("a.test", "b.test", "c.test"):
        m.set_certificate(name, not_before=t, not_after=t, renewal_at=t)
        m.set_certificate_ready(name, True)
    m.drop_certificate("a.test")
    m.retain_certificates(["b.test"])
    names = {
        s.labels.get("name")
        for fam in text_string_to_metric_families(m.render())
        for s in fam.samples
        if "name" in s.labels
    }
    assert names == {"b.test"}


def test_unlabelled_metrics_start_at_zero() -> None:
    s = samples(ControllerMetrics().render())
    assert s[("njcm_mqtt_connected", ())] == 0
    assert s[("njcm_reconciles_total", ())] == 0
    assert s[("njcm_reconcile_duration_seconds_bucket", (("le", "+Inf"),))] == 0
