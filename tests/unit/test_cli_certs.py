"""The operator commands and what they read: the Ready/Issuing conditions fold.py keeps, the
controller's outcomes in the event log, reconcile's progress, colour only on a terminal, and
`certs show|delete`, `status` and GET /api/v1/events over a real store in a tmp prefix."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from controller.adapters.admin.server import build_app
from controller.adapters.store.events import EventLog, PassEvents
from controller.app import App
from controller.cli_certs import cmd_delete, cmd_status
from controller.cli_output import Colour, ReconcileProgress, colour_wanted
from controller.cli_show import cmd_show, renewal_why
from controller.config import load_config, parse_config
from controller.errors import PermanentError
from controller.execute import Executor
from controller.fold import Outcome, fold
from controller.model import ActionKind, Desired, Observed
from controller.paths import StorePaths
from controller.plan import Action, Plan, Waiting
from controller.ports import ActionProgress
from controller.reasons import Reason
from controller.service import Service
from controller.status import ISSUING, READY, CertStatus, status_from_json, status_to_json
from tests.certbuilder import make_cert
from tests.fakes import FakeClock, FakeIssuer, MemoryStore, spec
from tests.support.tomlgen import render_toml

NOW = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
A = spec("a.test", "www.a.test", listens=())
DESIRED = Desired(specs={"a.test": A})
TOKEN = "t0ken"


def issue(kind: ActionKind = ActionKind.ISSUE, reason: Reason = Reason.MISSING) -> Action:
    return Action(kind, "a.test", reason, "no certificate stored", spec=A, spec_hash="h1")


def stored_observed(domain: str = "a.test") -> Observed:
    made = make_cert([domain], not_before=NOW - timedelta(days=1))
    from controller.certinfo import read_cert_info
    from controller.model import StoredCert

    return Observed(stored={domain: StoredCert(domain, read_cert_info(made.fullchain_pem),
                                               key_matches=True)})


# -- conditions ---------------------------------------------------------------------------------


def test_ready_and_issuing_follow_a_failure_its_backoff_and_the_success() -> None:
    failed, _ = fold({}, desired=DESIRED, plan=Plan(actions=(issue(),)), now=NOW,
                     outcomes=[Outcome(issue(), ok=False, error="CA down")],
                     observed=Observed(stored={}))
    st = failed["a.test"]
    ready, issuing = st.condition(READY), st.condition(ISSUING)
    assert ready is not None and issuing is not None
    assert (ready.status, ready.reason, ready.last_transition) == ("False", "Missing", NOW)
    assert issuing.true and issuing.reason == "Missing" and "attempt 1 failed: CA down" in (
        issuing.message)

    later = NOW + timedelta(seconds=30)
    wait = Waiting("a.test", Reason.BACKOFF, "issue (Missing) after 1 failed attempt(s): CA down",
                   until=st.backoff_until)
    held, _ = fold(failed, desired=DESIRED, plan=Plan(waiting=(wait,)), outcomes=[], now=later,
                   observed=Observed(stored={}))
    h = held["a.test"]
    assert h.condition(ISSUING) == issuing  # the backoff keeps the failure's Issuing
    hr = h.condition(READY)
    assert hr is not None and hr.reason == "Backoff" and hr.last_transition == NOW  # no flip

    done_at = NOW + timedelta(minutes=5)
    ok, _ = fold(held, desired=DESIRED, plan=Plan(actions=(issue(),)), now=done_at,
                 outcomes=[Outcome(issue(), ok=True, stored_fingerprint="ab" * 32)],
                 observed=Observed(stored={}))
    o = ok["a.test"]
    r, i = o.condition(READY), o.condition(ISSUING)
    assert r is not None and i is not None
    assert (r.status, r.reason, r.last_transition) == ("True", "Issued", done_at)
    assert (i.status, i.reason, i.last_transition) == ("False", "Issued", done_at)
    assert [c.type for c in o.conditions] == [READY, ISSUING]

    quiet, _ = fold(ok, desired=DESIRED, plan=Plan(), outcomes=[], now=done_at + timedelta(1),
                    observed=stored_observed())
    assert quiet["a.test"] is o  # in sync and already Ready: no change, no status write


def test_a_new_reason_keeps_the_last_transition_and_a_flip_moves_it() -> None:
    st = CertStatus("a.test").with_condition(READY, true=False, reason="Missing", message="m",
                                             at=NOW)
    later = NOW + timedelta(hours=1)
    same = st.with_condition(READY, true=False, reason="Missing", message="m", at=later)
    assert same is st
    moved = st.with_condition(READY, true=False, reason="Backoff", message="b", at=later)
    cond = moved.condition(READY)
    assert cond is not None and cond.reason == "Backoff" and cond.last_transition == NOW
    flipped = moved.with_condition(READY, true=True, reason="Issued", message="ok", at=later)
    cond = flipped.condition(READY)
    assert cond is not None and cond.true and cond.last_transition == later
    long = st.with_condition(ISSUING, true=True, reason="X", message="e" * 2000, at=NOW)
    shown = long.condition(ISSUING)
    assert shown is not None and len(shown.message) == 513


def test_conditions_survive_the_status_file_and_a_file_without_them_loads() -> None:
    st = CertStatus("a.test").with_condition(READY, true=True, reason="Issued", message="ok",
                                             at=NOW)
    assert status_from_json(status_to_json(st)) == st
    old = status_from_json(b'{"domain": "a.test", "attempts": 2}')
    assert old.conditions == () and old.condition(READY) is None


def test_a_forced_renewal_request_sets_issuing() -> None:
    from controller.renewal_requests import ForceRenewLimits, decide_forced_renewal

    d = decide_forced_renewal(None, domain="a.test", stored_fingerprint="ff", not_before=None,
                              now=NOW, limits=ForceRenewLimits(), force=False)
    assert d.status is not None
    cond = d.status.condition(ISSUING)
    assert cond is not None and cond.true and cond.reason == "Forced"


# -- the event log ------------------------------------------------------------------------------


def test_every_finished_action_of_a_pass_is_one_event(tmp_path: Path) -> None:
    log = EventLog(StorePaths(tmp_path), clock=lambda: NOW)
    failing = CertStatus("b.test", attempts=2, backoff_until=NOW + timedelta(minutes=2))
    b = Action(ActionKind.RENEW, "b.test", Reason.RENEWAL_DUE, "renewal due", spec=A)
    outcomes = [Outcome(issue(), ok=True, stored_fingerprint="ab" * 32),
                Outcome(b, ok=False, error="CA said no"),
                Outcome(issue(ActionKind.APPLY, Reason.NOT_SERVED), ok=False, skipped=True)]
    PassEvents(log).on_pass(plan=Plan(), outcomes=outcomes, seconds=0.1,
                            observed=Observed(stored={}), statuses={"b.test": failing})
    events = log.recent()
    assert [(e["kind"], e["action"], e["domain"], e["result"], e["reason"]) for e in events] == [
        ("controller", "issue", "a.test", "issued", "Missing"),
        ("controller", "renew", "b.test", "failed", "RenewalDue"),
        ("controller", "apply", "a.test", "skipped", "NotServed")]
    assert "stored sha256 abab" in events[0]["detail"]
    assert events[1]["detail"] == (
        "CA said no (attempt 2; next attempt after 2031-03-01T12:02:00+00:00)")
    assert all(e["peer"].startswith("controller pid ") for e in events)


def test_recent_filters_by_name_and_reads_the_rotated_file_too(tmp_path: Path) -> None:
    log = EventLog(StorePaths(tmp_path), max_bytes=400, clock=lambda: NOW)
    for n in range(12):
        log.append(kind="cli", peer="cli", action="renew", domain=f"d{n % 3}.test",
                   result="requested")
    assert log.rotated.exists()
    mine = log.recent(100, domain="d1.test")
    assert [e["domain"] for e in mine] == ["d1.test"] * len(mine) and len(mine) >= 2
    assert len(log.recent(2, domain="d1.test")) == 2
    assert log.recent(0) == []


# -- progress and colour ------------------------------------------------------------------------


@dataclass
class RecordingProgress:
    calls: list[Any] = field(default_factory=list)

    def started(self, total: int) -> None:
        self.calls.append(("started", total))

    def finished(self, outcome: Outcome) -> None:
        self.calls.append(("finished", outcome.action.domain, outcome.ok))

    def ended(self) -> None:
        self.calls.append("ended")


async def test_the_executor_tells_the_progress_as_each_action_ends() -> None:
    clock = FakeClock(NOW)
    issuer = FakeIssuer(clock)
    issuer.fail = [PermanentError("rejected b.test")]
    progress = RecordingProgress()
    port: ActionProgress = progress
    executor = Executor(store=MemoryStore(), issuer_factory=issuer.factory, clock=clock,
                        progress=port, concurrency=1)
    b = spec("b.test", listens=())
    actions = [Action(ActionKind.ISSUE, "b.test", Reason.MISSING, "m", spec=b,
                      key_type=b.key_type),
               Action(ActionKind.ISSUE, "a.test", Reason.MISSING, "m", spec=A,
                      key_type=A.key_type)]
    outcomes = await executor.execute(actions)
    assert [o.ok for o in outcomes] == [False, True]
    assert progress.calls == [("started", 2), ("finished", "b.test", False),
                              ("finished", "a.test", True), "ended"]


def test_progress_is_one_plain_line_per_action_off_a_terminal() -> None:
    out = io.StringIO()
    p = ReconcileProgress(out, tty=False)
    p.started(2)
    p.finished(Outcome(issue(), ok=True))
    p.finished(Outcome(issue(ActionKind.RENEW, Reason.RENEWAL_DUE), ok=False, error="boom"))
    p.ended()
    assert out.getvalue().splitlines() == ["issued a.test [Missing] (1/2)",
                                           "failed renew a.test [RenewalDue]: boom (2/2)"]


def test_progress_draws_a_bar_per_pass_on_a_terminal() -> None:
    out = io.StringIO()
    p = ReconcileProgress(out, tty=True, colour=Colour(True))
    for _ in range(2):
        p.started(1)
        p.finished(Outcome(issue(), ok=True))
        p.ended()
    text = out.getvalue()
    assert "pass 1" in text and "pass 2" in text and "1/1" in text
    assert "\x1b[32missued\x1b[0m a.test [Missing]" in text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert colour_wanted(Terminal()) and not colour_wanted(io.StringIO())
    assert Colour.for_stream(Terminal())("red", "x") == "\x1b[31mx\x1b[0m"
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_wanted(Terminal())
    assert Colour.for_stream(Terminal())("red", "x") == "x"
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: an empty value does not count
    assert colour_wanted(Terminal())
    monkeypatch.setenv("TERM", "dumb")
    assert not colour_wanted(Terminal())


# -- the commands over a tmp prefix -------------------------------------------------------------

CONF = """http {
    server {
        listen 127.0.0.1:8443 ssl;
        server_name a.test www.a.test;
        ssl_certificate_management acme;
    }
}
"""


@pytest.fixture
async def app(tmp_path: Path) -> Any:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "njet.conf").write_text(CONF)
    (tmp_path / "conf" / "cert-manager.toml").write_text(render_toml({
        "acme": {"email": "cli@example.test", "acmeCaDir": "https://127.0.0.1:9/dir",
                 "keyType": "ec256"},
        "njet": {"apiAddress": ""},
    }))
    made = App(load_config(tmp_path / "conf" / "cert-manager.toml", prefix=tmp_path))
    made.reconciler.clock = lambda: NOW
    made.store.put("a.test", make_cert(["a.test", "www.a.test"], not_before=NOW - timedelta(
        days=1)).issued())
    yield made
    await made.close()


async def test_certs_show_prints_the_whole_story_in_each_format(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer = FakeIssuer(FakeClock(NOW))
    app.reconciler.executor.issuer_factory = issuer.factory
    app.reconciler.observers.append(PassEvents(EventLog(app.paths, clock=lambda: NOW)))
    app.status_files.save(CertStatus("a.test", attempts=1, last_failure="CA down")
                          .with_condition(READY, true=False, reason="Missing", message="m",
                                          at=NOW - timedelta(hours=2)))
    await app.reconciler.pass_once()  # in sync: conditions set, no action
    assert await cmd_show(app, "A.test.", "json") == 0
    doc = orjson.loads(capsys.readouterr().out)
    ready = doc["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "InSync")
    assert datetime.fromisoformat(ready["last_transition"]) == NOW
    assert doc["spec"]["key_type"] == "ec256" and doc["spec"]["source"] == "njet.conf"
    assert doc["certificate"]["days_left"] == 89.0 and doc["pending"] == []
    assert "30d before notAfter" in doc["renewal"]["why"]

    assert await cmd_show(app, "a.test", "yaml") == 0
    assert yaml.safe_load(capsys.readouterr().out) == doc

    assert await cmd_show(app, "a.test", "table") == 0
    table = capsys.readouterr().out
    assert "Ready    True    InSync" in table and "\x1b[" not in table
    assert "store-only mode" in table and "in sync" in table

    assert await cmd_show(app, "nope.test", "table") == 1
    assert "neither a desired certificate nor in the store" in capsys.readouterr().err


def test_the_renewal_is_explained_by_the_rule_that_chose_it() -> None:
    observed = stored_observed()
    stored = observed.stored["a.test"]
    at, why = renewal_why(stored, None, timedelta(days=30))
    assert at == stored.info.not_after - timedelta(days=30)
    assert why.startswith("30d before notAfter: [acme] renewBeforeDays")
    short = make_cert(["s.test"], not_before=NOW, lifetime=timedelta(days=6))
    from controller.certinfo import read_cert_info
    from controller.model import StoredCert

    s = StoredCert("s.test", read_cert_info(short.fullchain_pem), key_matches=True)
    at, why = renewal_why(s, None, timedelta(days=30))
    assert at == s.info.not_after - timedelta(days=3) and "1/2 of the 6d lifetime" in why
    chosen = CertStatus("s.test", renewal_at=NOW + timedelta(days=1))
    assert "chosen" in renewal_why(s, chosen, timedelta(days=30))[1]


async def test_certs_delete_moves_the_pair_into_quarantine_and_logs_it(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cmd_delete(app, "a.test", revoke=False) == 0
    out = capsys.readouterr().out
    assert "moved to" in out and "still desired" in out
    assert app.store.get("a.test") is None and len(app.quarantine.entries()) == 1
    assert await cmd_delete(app, "a.test", revoke=False) == 1
    assert "no certificate for a.test" in capsys.readouterr().err
    events = EventLog(app.paths).recent()
    assert [(e["kind"], e["action"], e["result"]) for e in events] == [
        ("cli", "delete", "quarantined"), ("cli", "delete", "not found")]


async def test_certs_delete_revoke_revokes_first_and_a_refusal_deletes_nothing(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer = FakeIssuer(FakeClock(NOW))
    app._issuer = issuer
    pem = app.store.cert_pem("a.test")

    async def refuse(cert_pem: bytes) -> None:
        raise PermanentError("the CA refused the revocation")

    issuer.revoke = refuse  # type: ignore[method-assign]
    from controller.errors import ControllerError

    with pytest.raises(ControllerError, match="refused the revocation"):
        await cmd_delete(app, "a.test", revoke=True)
    assert app.store.get("a.test") is not None
    del issuer.revoke
    assert await cmd_delete(app, "a.test", revoke=True) == 0
    assert issuer.revoked == [pem] and app.store.get("a.test") is None
    assert "revoked at the CA and moved" in capsys.readouterr().out


async def test_status_reads_the_store_without_a_controller(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cmd_status(app, "json") == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert (doc["source"], doc["certificates"], doc["problem_count"]) == ("store", 1, 0)
    assert doc["soonest_expiry"]["domain"] == "a.test"
    app.paths.certificates.joinpath("b.test.crt").write_bytes(b"not a certificate")
    app.paths.certificates.joinpath("b.test.key").write_bytes(b"nor a key")
    assert await cmd_status(app, "table") == 1
    out = capsys.readouterr().out
    assert "degraded" in out and "problem: b.test" in out


# -- GET /api/v1/events, DELETE ?revoke=true ---------------------------------------------------


async def test_the_admin_api_serves_events_and_revokes_on_delete(tmp_path: Path) -> None:
    prefix = tmp_path / "njet"
    (prefix / "conf").mkdir(parents=True)
    (prefix / "conf" / "njet.conf").write_text(CONF)
    config = parse_config({"njet": {"apiAddress": ""}, "admin": {"token": TOKEN},
                           "acme": {"keyType": "ec256"}}, prefix=prefix)
    service = Service(config)
    issuer = FakeIssuer(FakeClock())
    service.app.reconciler.executor.issuer_factory = issuer.factory
    service.app.store.put("a.test", make_cert(["a.test", "www.a.test"]).issued())
    log = service.backend.events
    assert log is not None
    for domain in ("a.test", "b.test", "a.test"):
        log.append(kind="cli", peer="cli", action="renew", domain=domain, result="requested")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with TestClient(TestServer(build_app(service.backend, TOKEN))) as client:
        r = await client.get("/api/v1/events?domain=a.test&limit=1", headers=auth)
        assert r.status == 200
        assert [e["domain"] for e in (await r.json())["events"]] == ["a.test"]
        r = await client.get("/api/v1/events", headers=auth)
        assert [e["domain"] for e in (await r.json())["events"]] == ["a.test", "b.test",
                                                                      "a.test"]
        assert (await client.get("/api/v1/events")).status == 401
        for bad in ("limit=0", "limit=5000", "limit=x", "domain=a..b"):
            r = await client.get(f"/api/v1/events?{bad}", headers=auth)
            assert r.status == 400, bad
        pem = service.app.store.cert_pem("a.test")
        r = await client.delete("/api/v1/cert/a.test?revoke=true", headers=auth)
        assert r.status == 200
        body = await r.json()
        assert body["revoked"] is True and body["quarantined_to"].startswith("quarantine/")
        assert issuer.revoked == [pem] and service.app.store.get("a.test") is None

        service.app.store.put("b.test", make_cert(["b.test"]).issued())

        async def refuse(cert_pem: bytes) -> None:
            raise PermanentError("unauthorized: not your certificate")

        issuer.revoke = refuse  # type: ignore[method-assign]
        r = await client.delete("/api/v1/cert/b.test?revoke=true", headers=auth)
        assert r.status == 502 and "not your certificate" in (await r.json())["error"]
        assert service.app.store.get("b.test") is not None  # nothing deleted
    await service.app.close()
