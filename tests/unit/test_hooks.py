"""Hooks and notifications, the pure parts: which outcomes become which events (over real passes
on the fakes), a hook's environment, the `[hooks]` / `[notify]` config keys, the webhook bodies
and their signature."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from controller.adapters.hooks.build import build_notifications, read_secret
from controller.adapters.hooks.events import (
    ENV_NAMES,
    HOOK_PATH,
    CertEvent,
    EventKind,
    events_from_pass,
    hook_env,
    rfc3339,
)
from controller.adapters.hooks.webhook import render_body, signature, target_of
from controller.config import parse_config
from controller.errors import ConfigError, TemporaryError
from controller.paths import StorePaths
from controller.reconcile import Reconciler
from tests.fakes import FakeClock, FakeDesired, FakeIssuer, MemoryStore, RecordingObserver
from tests.support.hookkit import A, B, store_only_reconciler

PATHS = StorePaths(Path("/srv/njet"))


def store_only(*specs: Any) -> tuple[Reconciler, MemoryStore, FakeIssuer, FakeClock, FakeDesired,
                                     RecordingObserver]:
    clock = FakeClock()
    store = MemoryStore()
    issuer = FakeIssuer(clock)
    observer = RecordingObserver()
    rec, desired = store_only_reconciler(specs, clock=clock, store=store, issuer=issuer,
                                         observers=[observer], delete_grace=timedelta(0))
    return rec, store, issuer, clock, desired, observer


def events_of(observer: RecordingObserver, clock: FakeClock) -> list[CertEvent]:
    last = observer.passes[-1]
    return events_from_pass(last.outcomes, last.observed, now=clock(), paths=PATHS)


# -- outcomes -> events ------------------------------------------------------------------------


async def test_a_first_issuance_is_issued_with_the_store_paths() -> None:
    rec, store, _, clock, _, observer = store_only(A, B)
    await rec.pass_once()
    events = {e.domain: e for e in events_of(observer, clock)}
    assert {d: e.kind for d, e in events.items()} == {"a.test": EventKind.ISSUED,
                                                      "b.test": EventKind.ISSUED}
    a = events["a.test"]
    assert a.names == ("a.test", "www.a.test") and a.action == "issue" and a.error is None
    assert a.cert_path == "/srv/njet/.lego/certificates/a.test.crt"
    assert a.key_path == "/srv/njet/.lego/certificates/a.test.key"
    assert a.needs_lookup and a.serial is None  # the new pair is read by the dispatcher
    stored = store.get("a.test")
    assert stored is not None
    done = a.with_stored(stored)
    assert done.serial == stored.info.serial and done.not_after == stored.info.not_after


async def test_a_renewal_is_renewed_a_deletion_deleted_and_a_second_pass_no_event() -> None:
    rec, store, _, clock, desired, observer = store_only(A, B)
    await rec.pass_once()
    await rec.pass_once()
    assert events_of(observer, clock) == []  # converged: nothing happened, nothing to tell
    old = store.get("a.test")
    assert old is not None
    clock.advance(timedelta(days=75))  # inside renewBefore (30 days of a 90-day certificate)
    await rec.pass_once()
    assert {e.kind for e in events_of(observer, clock)} == {EventKind.RENEWED}
    desired.specs = [A]
    await rec.pass_once()  # b.test's grace period starts (0 s): no event yet
    assert events_of(observer, clock) == []
    await rec.pass_once()
    (deleted,) = events_of(observer, clock)
    assert deleted.kind is EventKind.DELETED and deleted.domain == "b.test"
    assert deleted.names == ("b.test",) and not deleted.needs_lookup
    assert deleted.serial is not None  # the serial of the pair that was removed


async def test_a_failed_order_is_failed_with_its_error() -> None:
    rec, _, issuer, clock, _, observer = store_only(A)
    issuer.fail.append(TemporaryError("CA at https://ca.test answered 503"))
    await rec.pass_once()
    (failed,) = events_of(observer, clock)
    assert failed.kind is EventKind.FAILED and failed.action == "issue"
    assert failed.error is not None and "503" in failed.error
    assert not failed.needs_lookup and failed.serial is None


def test_the_hook_of_each_event() -> None:
    assert [k.hook for k in EventKind] == ["onIssued", "onRenewed", "onFailed", "onDeleted"]


# -- a hook's environment ----------------------------------------------------------------------


def test_a_hook_environment_is_exactly_the_documented_variables() -> None:
    rec_event = CertEvent(kind=EventKind.FAILED, domain="a.test", names=("a.test", "b.a.test"),
                          at=FakeClock()(), action="renew", reason="RenewalDue",
                          error="boom", serial="0a", not_after=FakeClock()() + timedelta(days=1),
                          cert_path="/p/a.crt", key_path="/p/a.key")
    env = hook_env(rec_event)
    assert tuple(env) == ENV_NAMES
    assert env["PATH"] == HOOK_PATH
    assert HOOK_PATH == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["NJCM_NAMES"] == "a.test,b.a.test" and env["NJCM_ERROR"] == "boom"
    assert env["NJCM_NOT_AFTER"].endswith("Z") and env["NJCM_NOT_AFTER"] == rfc3339(
        rec_event.not_after)
    assert env["NJCM_EVENT"] == "failed" and env["NJCM_KEY_PATH"] == "/p/a.key"


# -- config ------------------------------------------------------------------------------------


def config(data: dict[str, Any], tmp_path: Path) -> Any:
    return parse_config(data, prefix=tmp_path, source="t.toml")


def test_hooks_and_notify_are_read(tmp_path: Path) -> None:
    cfg = config({"hooks": {"onIssued": ["/usr/bin/true", "--x"], "onFailed": [],
                            "timeout": "5s"},
                  "notify": {"webhook": "https://hooks.example.test/T/B?token=s3cret",
                             "template": "dingtalk", "retries": 0, "timeout": 2,
                             "secretFile": "conf/hmac"}}, tmp_path)
    assert cfg.hooks.onIssued == ("/usr/bin/true", "--x") and cfg.hooks.onFailed is None
    assert cfg.hooks.timeout == timedelta(seconds=5)
    assert cfg.notify.template == "dingtalk" and cfg.notify.retries == 0
    assert cfg.notify_secret_file == tmp_path / "conf" / "hmac"
    defaults = config({}, tmp_path)
    assert defaults.hooks.timeout == timedelta(seconds=30) and defaults.notify.retries == 3
    assert defaults.notify.webhook == "" and defaults.notify.template == "json"


@pytest.mark.parametrize(("data", "key"), [
    ({"hooks": {"onIssued": "/usr/local/bin/reload-s3cret --now"}}, "hooks.onIssued"),
    ({"hooks": {"onRenewed": ["/bin/x", 7]}}, "hooks.onRenewed"),
    ({"hooks": {"onDeleted": ["", "s3cret"]}}, "hooks.onDeleted"),
    ({"hooks": {"onFailed": ["/bin/x", "s3cret\x00"]}}, "hooks.onFailed"),
    ({"hooks": {"timeout": "500ms"}}, "hooks.timeout"),
    ({"notify": {"webhook": "ftp://s3cret.example.test/x"}}, "notify.webhook"),
    ({"notify": {"webhook": "https://h.test:99999/s3cret"}}, "notify.webhook"),
    ({"notify": {"webhook": "https:///s3cret"}}, "notify.webhook"),
    ({"notify": {"webhook": "https://h.test/a b?s3cret"}}, "notify.webhook"),
    ({"notify": {"template": "s3cret"}}, "notify.template"),
    ({"notify": {"retries": 11}}, "notify.retries"),
    ({"notify": {"timeout": 0}}, "notify.timeout"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_bad_key_is_named_never_its_value(data: dict[str, Any], key: str,
                                            tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config(data, tmp_path)
    assert str(err.value).startswith(f"t.toml: {key}: ")
    assert "s3cret" not in str(err.value)


def test_unknown_hooks_keys_are_reported(tmp_path: Path) -> None:
    from controller.config import unknown_keys

    cfg = config({"hooks": {"onIssue": ["/bin/true"]}, "notify": {"url": "x"}}, tmp_path)
    assert set(unknown_keys(cfg)) == {"hooks.onIssue", "notify.url"}


def test_the_secret_file_is_read_once_and_named_when_unusable(tmp_path: Path) -> None:
    secret = tmp_path / "hmac"
    cfg = config({"notify": {"webhook": "http://127.0.0.1:9/x", "secretFile": str(secret)}},
                 tmp_path)
    with pytest.raises(ConfigError, match=r"notify\.secretFile: cannot read .*hmac"):
        read_secret(cfg)
    secret.write_text("\n")
    with pytest.raises(ConfigError, match=r"notify\.secretFile: .*hmac is empty"):
        read_secret(cfg)
    secret.write_text("k3y\n")
    assert read_secret(cfg) == b"k3y"
    assert build_notifications(config({}, tmp_path), store=MemoryStore(), paths=PATHS) is None


# -- webhook bodies ----------------------------------------------------------------------------


def sample(kind: EventKind = EventKind.RENEWED) -> CertEvent:
    at = FakeClock()()
    return CertEvent(kind=kind, domain="a.test", names=("a.test", "www.a.test"), at=at,
                     action="renew", reason="RenewalDue", serial="0bad",
                     not_after=at + timedelta(days=90),
                     error="CA said no" if kind is EventKind.FAILED else None)


def test_each_template_is_the_body_its_service_takes() -> None:
    event = sample()
    doc = orjson.loads(render_body("json", event))
    assert doc["event"] == "renewed" and doc["names"] == ["a.test", "www.a.test"]
    assert doc["serial"] == "0bad" and doc["notAfter"] == rfc3339(event.not_after)
    assert doc["time"] == rfc3339(event.at) and doc["error"] is None
    slack = orjson.loads(render_body("slack", event))
    assert set(slack) == {"text"} and "a.test" in slack["text"] and "renewed" in slack["text"]
    for name in ("dingtalk", "wecom"):
        body = orjson.loads(render_body(name, sample(EventKind.FAILED)))
        assert body["msgtype"] == "text" and set(body) == {"msgtype", "text"}
        assert "CA said no" in body["text"]["content"]


def test_the_signature_is_an_hmac_of_the_body_and_the_log_target_hides_the_path() -> None:
    body = render_body("json", sample())
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature(b"k", body) == f"sha256={expected}"
    assert target_of("https://user:pw@Hooks.Example.test:8443/T/B?token=x") == (
        "https://hooks.example.test:8443")
    assert target_of("http://[::1]/s") == "http://[::1]"
