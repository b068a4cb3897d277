"""controller.metrics: output parsed with prometheus_client's own text parser; the series a
reconcile pass feeds (admin_backend.on_pass -> pass_metrics.PassFeed) over the fakes."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from controller.admin_backend import ControllerBackend
from controller.errors import TemporaryError
from controller.metrics import AcmeOutcome, ControllerMetrics
from controller.model import CertificateSpec
from controller.promtext import Registry
from controller.reconcile import Loop
from tests.unit.test_reconcile_loop import A, B, World, world


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


# -- fed from passes (admin_backend.on_pass -> pass_metrics.PassFeed) ------------------------


def fed_world(*specs: CertificateSpec) -> tuple[World, ControllerBackend]:
    """The reconcile-loop world (fakes, real plan/execute/fold) with the real backend as its
    pass observer, as service.py wires it."""
    w = world(*specs)
    b = ControllerBackend(reconciler=w.rec, loop=Loop(w.rec, timedelta(hours=1)),
                          metrics=ControllerMetrics(), mqtt_state={"connected": False})
    w.rec.observer = b
    return w, b


def value(b: ControllerBackend, metric: str, /, **labels: str) -> float | None:
    return samples(b.metrics.render()).get((metric, tuple(sorted(labels.items()))))


async def test_passes_count_actions_renewals_and_verified_applies() -> None:
    w, b = fed_world(A, B)
    await w.rec.converge(probe=True)
    assert value(b, "njcm_actions_total", action="issue", result="success") == 2
    assert value(b, "njcm_njet_apply_total", result="success") == 2
    assert value(b, "njcm_certificate_served_matches_stored", name="a.test") == 1
    assert value(b, "njcm_certificate_served_matches_stored", name="b.test") == 1
    assert value(b, "njcm_certificate_renewals_total", name="a.test", result="success") is None
    w.clock.advance(timedelta(days=61))  # 90-day certificates renew 30 days before the end
    await w.rec.pass_once(probe=True)
    assert value(b, "njcm_njet_verify_total", result="match") == 2  # probed before renewing
    assert value(b, "njcm_actions_total", action="renew", result="success") == 2
    assert value(b, "njcm_certificate_renewals_total", name="a.test", result="success") == 1
    assert value(b, "njcm_njet_apply_total", result="success") == 4
    assert value(b, "njcm_certificate_served_matches_stored", name="a.test") == 1


async def test_a_failing_streak_starts_at_the_first_failure_and_ends_with_a_success() -> None:
    w, b = fed_world(A)
    w.issuer.fail = [TemporaryError("CA unreachable"), TemporaryError("CA unreachable")]
    first = w.clock()
    await w.rec.pass_once(probe=True)
    since = "njcm_certificate_failing_since_timestamp_seconds"
    assert value(b, "njcm_actions_total", action="issue", result="failure") == 1
    assert value(b, since, name="a.test") == first.timestamp()
    w.clock.advance(timedelta(hours=2))  # past the backoff: the second attempt fails too
    await w.rec.pass_once()
    assert value(b, "njcm_actions_total", action="issue", result="failure") == 2
    assert value(b, since, name="a.test") == first.timestamp()  # the streak's start stays
    w.clock.advance(timedelta(hours=2))
    await w.rec.pass_once()
    assert value(b, "njcm_actions_total", action="issue", result="success") == 1
    assert value(b, since, name="a.test") is None


async def test_served_not_stored_stays_zero_until_a_verified_apply() -> None:
    w, b = fed_world(A)
    await w.rec.converge(probe=True)
    stored = w.fp("a.test")
    w.njet.blocks[0].served["ecc"] = "0" * 64  # NJet restarted onto its bootstrap cert
    w.njet.blocks[0].dynamic.clear()  # and without its dynamic records
    w.njet.fail_puts = [TemporaryError("NJet API busy")] * 3  # and the re-apply fails
    await w.rec.pass_once(probe=True)
    assert value(b, "njcm_njet_verify_total", result="mismatch") == 1
    assert value(b, "njcm_njet_apply_total", result="failure") == 1
    assert value(b, "njcm_certificate_served_matches_stored", name="a.test") == 0
    assert w.rec.statuses["a.test"].applied_fingerprint is None  # the probe's word wins
    await w.rec.pass_once()  # no probe, still in backoff: the last evidence still counts
    assert value(b, "njcm_certificate_served_matches_stored", name="a.test") == 0
    w.clock.advance(timedelta(hours=1))
    await w.rec.pass_once()  # backoff over: retried without waiting for the next probe
    assert w.rec.statuses["a.test"].applied_fingerprint == stored
    assert value(b, "njcm_njet_apply_total", result="success") == 2
    assert value(b, "njcm_certificate_served_matches_stored", name="a.test") == 1
    assert value(b, "njcm_certificate_failing_since_timestamp_seconds", name="a.test") is None


async def test_store_only_passes_have_no_served_series_and_no_applies() -> None:
    w, b = fed_world(A)
    settings = replace(w.rec.settings, store_only=True)
    w.rec.settings = w.rec.gatherer.settings = settings
    w.rec.gatherer.njet = w.rec.executor.njet = None
    await w.rec.converge(probe=True)
    text = b.metrics.render()
    assert value(b, "njcm_actions_total", action="issue", result="success") == 1
    assert "njcm_certificate_served_matches_stored{" not in text
    assert "njcm_njet_apply_total{" not in text and "njcm_njet_verify_total{" not in text
    assert "# TYPE njcm_certificate_served_matches_stored gauge" in text


async def test_a_name_leaving_takes_its_new_series_along() -> None:
    w, b = fed_world(A, B)
    await w.rec.converge(probe=True)
    w.clock.advance(timedelta(days=61))
    await w.rec.pass_once(probe=True)  # renewals: per-name counters for both
    w.desired.specs = [A]
    await w.rec.pass_once()  # b.test's deleteGracePeriod starts
    w.clock.advance(timedelta(days=2))  # and is over: b.test is deleted
    await w.rec.converge()
    assert value(b, "njcm_actions_total", action="delete", result="success") == 1
    names = {s.labels.get("name") for fam in text_string_to_metric_families(b.metrics.render())
             for s in fam.samples if "name" in s.labels}
    assert names == {"a.test"}
