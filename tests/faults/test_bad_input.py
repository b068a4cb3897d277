"""Fault injection, bad input: thousands of generated njet.conf texts, TOML configs, MQTT payloads
and admin API requests. Every one is either accepted or refused cleanly: the documented error
type with a message that says where (file:line, the key), never another exception, never a
private key in a message, never a 500, never a file written outside the store.

Seeded and deterministic (`derandomize=True`, no example database). Each family runs a tenth of
its cases in the default run (`[sample]`: 1,030 in all) and all of them under `-m slow`
(`[full]`: 10,300); both scale with NJCM_FAULT_SCALE. Each family prints one summary line
through tests/faults/summary.py.
"""

from __future__ import annotations

import asyncio
import os
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings

from controller.adapters.admin.page import PUBLIC_PATHS
from controller.app import policy_settings
from controller.config import Config, load_config, parse_config, unknown_keys
from controller.desired import desired_from_servers, load_desired
from controller.errors import ConfigError
from controller.events import (
    EventError,
    NjetEvent,
    RuntimeServer,
    parse_event,
    parse_srv_record,
    specs_from_domains,
    specs_from_servers,
)
from controller.model import KeyType
from controller.njetconf import ConfSyntaxError, http_servers, parse_text
from tests.certbuilder import cached_key
from tests.faults import badinput, badmqtt, summary
from tests.faults.admin_target import AdminTarget, Request, exchange
from tests.faults.depth import DEPTHS, pick

F = TypeVar("F", bound=Callable[..., Any])


SAMPLE_DIVISOR = 10  # the default run's share of a family's cases


def fault_settings(depth: str, full_examples: int) -> Callable[[F], F]:
    examples = pick(depth, sample=max(1, full_examples // SAMPLE_DIVISOR), full=full_examples)
    return settings(
        max_examples=summary.scaled(examples),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def snapshot(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.join(dirpath, name)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[path] = Path(path).read_bytes()
    return out


# --- njet.conf -----------------------------------------------------------------------------


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "conf"
    for rel, data in badinput.INCLUDE_FILES.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)
    for rel in badinput.INCLUDE_DIRS:
        (directory / rel).mkdir(parents=True)
    return directory


@pytest.mark.parametrize("depth", DEPTHS)
def test_bad_njet_conf_is_parsed_or_refused_with_file_and_line(
    conf_dir: Path, tmp_path: Path, depth: str
) -> None:
    main = conf_dir / "njet.conf"
    files = {str(main)} | {str(conf_dir / rel) for rel in badinput.INCLUDE_FILES}
    trials = 0

    @fault_settings(depth, 2800)
    @given(text=badinput.conf_text)
    def check(text: str) -> None:
        nonlocal trials
        trials += 1
        try:  # in memory, includes left as they are
            desired_from_servers(http_servers(parse_text(text, file="njet.conf")))
        except ConfSyntaxError as exc:
            badinput.assert_located(exc, files={"njet.conf"}, text=text, main="njet.conf")
        except ConfigError as exc:
            pytest.fail(f"ConfigError without a file:line location: {exc}")
        main.write_bytes(text.encode())  # on disk, every include expanded
        before = snapshot(tmp_path)
        try:
            load_desired(main, key_type=KeyType.EC256)
        except ConfSyntaxError as exc:
            badinput.assert_located(exc, files=files, text=text, main=str(main))
        except ConfigError as exc:
            pytest.fail(f"ConfigError without a file:line location: {exc}")
        assert snapshot(tmp_path) == before, "reading njet.conf changed files"

    check()
    summary.record("bad-input-conf", trials=trials, converged=trials)


def test_includes_nested_inside_deep_blocks_are_refused_not_a_recursion_error(
    conf_dir: Path,
) -> None:
    """Each file stays within the per-file nesting limit; the chain of includes does not.
    Found by this suite: parse_file raised RecursionError (njetconf._expand)."""
    depth, files = 60, 40
    for i in range(files):
        inner = f"include deep{i + 1}.conf;" if i + 1 < files else "worker_processes 1;"
        (conf_dir / f"deep{i}.conf").write_text("x {" * depth + inner + "}" * depth)
    with pytest.raises(ConfSyntaxError, match="nested too deep") as caught:
        load_desired(conf_dir / "deep0.conf")
    exc = caught.value
    text = (conf_dir / Path(exc.file).name).read_text()
    badinput.assert_located(exc, files={str(conf_dir / f"deep{i}.conf") for i in range(files)},
                            text=text, main=exc.file)  # fmt: skip


# --- TOML ----------------------------------------------------------------------------------


REFERENCE_NOW = datetime(2030, 1, 1, tzinfo=UTC)  # fixed, so the oracle is deterministic


def assert_usable(cfg: Config, data: dict[str, Any]) -> None:
    """A config parse_config accepted can be used: the app's settings, paths, deadlines."""
    settings_ = policy_settings(cfg)
    assert cfg.conf_path.is_absolute() and cfg.mqtt_address
    later: list[tuple[str, timedelta]] = [
        ("controller.interval", cfg.controller.interval),  # Loop: now + interval
        ("controller.deleteGracePeriod", cfg.controller.deleteGracePeriod),  # orphaned_at + grace
        ("acme.renewBeforeDays", -settings_.renew_before),  # not_after - renew_before
    ]
    for name, delta in later:
        try:
            REFERENCE_NOW + delta
        except OverflowError:
            pytest.fail(f"{name} = {delta!r} was accepted but cannot be added to a date")
    unknown = set(unknown_keys(cfg))
    for section, value in data.items():
        if section in ("prefix", "source"):
            continue
        if section == "certificates":
            assert badinput.unknown_certificate_keys(value) <= unknown, "[certificates] unknown"
            continue
        if section not in badinput.KNOWN_KEYS:
            assert section in unknown, f"unknown section {section!r} not reported"
        elif isinstance(value, dict):
            for key in value:
                if key not in badinput.KNOWN_KEYS[section]:
                    assert f"{section}.{key}" in unknown, f"unknown key {section}.{key}"


@pytest.mark.parametrize("depth", DEPTHS)
def test_bad_toml_values_are_accepted_or_refused_naming_the_key(
    tmp_path: Path, depth: str
) -> None:
    trials = 0

    @fault_settings(depth, 2000)
    @given(data=badinput.toml_dict)
    @example(data={"controller": {"interval": 1e300}})  # found by this suite: OverflowError
    @example(data={"controller": {"deleteGracePeriod": "99999999d"}})
    @example(data={"acme": {"renewBeforeDays": 1e300}})
    def check(data: dict[str, Any]) -> None:
        nonlocal trials
        trials += 1
        try:
            cfg = parse_config(data, prefix=tmp_path, source="fault.toml")
        except ConfigError as exc:
            assert str(exc).startswith("fault.toml: "), str(exc)
            badinput.assert_config_error_names_key(str(exc), data)
        else:
            assert_usable(cfg, data)

    check()
    summary.record("bad-input-toml", trials=trials, converged=trials)


@pytest.mark.parametrize("depth", DEPTHS)
def test_bad_toml_text_is_refused_as_not_valid_toml_or_naming_the_key(
    tmp_path: Path, depth: str
) -> None:
    path = tmp_path / "cert-manager.toml"
    trials = 0

    @fault_settings(depth, 1500)
    @given(text=badinput.toml_text)
    def check(text: str) -> None:
        nonlocal trials
        trials += 1
        path.write_bytes(text.encode())
        try:
            data: dict[str, Any] | None = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            data = None
        try:
            cfg = load_config(path, prefix=tmp_path)
        except ConfigError as exc:
            message = str(exc)
            assert str(path) in message, message
            if data is None:
                assert "not valid TOML" in message, message
            else:
                badinput.assert_config_error_names_key(message, data)
        else:
            assert data is not None, "load_config accepted text tomllib refuses"
            assert_usable(cfg, data)

    check()
    summary.record("bad-input-toml", trials=trials, converged=trials)


# --- MQTT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", DEPTHS)
def test_bad_mqtt_payloads_are_parsed_or_refused_without_echoing_a_key(depth: str) -> None:
    key = cached_key(KeyType.EC256, 41).decode()
    fragments = badmqtt.key_fragments(key, cached_key(KeyType.EC256, 42).decode())
    trials = 0

    @fault_settings(depth, 2800)
    @given(payload=badmqtt.mqtt_payload(key))
    @example(payload=orjson.dumps({"action": key, "domains": []}))  # found by this suite
    @example(payload=orjson.dumps({"type": badmqtt.pem_body(key), "addr_port": "",
                                   "server_name": ""}))  # fmt: skip
    def check(payload: bytes) -> None:
        nonlocal trials
        trials += 1
        try:
            event = parse_event(payload)
        except EventError as exc:
            assert isinstance(exc, ValueError) and str(exc).strip()
            badmqtt.assert_no_secret(str(exc), fragments)
        else:
            assert event is None or isinstance(event, NjetEvent)
            if event is not None:
                specs_from_domains(event.domains)
        try:
            server = parse_srv_record(payload)
        except EventError as exc:
            assert isinstance(exc, ValueError) and str(exc).strip()
            badmqtt.assert_no_secret(str(exc), fragments)
        else:
            assert server is None or isinstance(server, RuntimeServer)
            if server is not None:
                specs_from_servers([server])

    check()
    summary.record("bad-input-mqtt", trials=trials, converged=trials)


# --- admin API -----------------------------------------------------------------------------


def check_response(req: Request | None, status: int | None, headers: dict[str, str],
                   body: bytes) -> None:  # fmt: skip
    if req is None:  # not HTTP at all: the parser answers 4xx (or closes)
        assert status is None or 400 <= status < 500, f"junk answered {status}"
        return
    assert status is not None, f"no answer to {req.wire()!r}"
    assert status < 500, f"{status} for {req.wire()!r}: {body[:300]!r}"
    assert 200 <= status < 300 or 400 <= status < 500, f"{status} for {req.wire()!r}"
    assert b"PRIVATE KEY" not in body
    is_json = headers.get("content-type", "").startswith("application/json")
    if status == 400 and not is_json:  # refused by aiohttp's HTTP parser, before the app
        assert not req.well_formed, f"plain-text 400 for a well-formed {req.wire()!r}"
        return
    page_file = req.method == "GET" and req.path in PUBLIC_PATHS  # the page holds no data
    if not req.authorized and req.path != "/healthz" and not page_file:
        assert status == 401, f"{status} without the token for {req.wire()!r}"
    if status >= 400 and req.method != "HEAD":
        assert is_json, f"{status} with {headers.get('content-type')} for {req.wire()!r}"
        doc = orjson.loads(body)
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], doc


@pytest.mark.parametrize("depth", DEPTHS)
def test_bad_admin_requests_get_a_json_4xx_and_touch_nothing_outside_the_store(
    tmp_path: Path, depth: str
) -> None:
    loop = asyncio.new_event_loop()
    target = loop.run_until_complete(AdminTarget.build(tmp_path))
    store_before, rest_before = target.tree()
    events_before = target.event_log()
    trials = 0
    answered: dict[int, int] = {}

    @fault_settings(depth, 1200)
    @given(sent_raw=exchange)
    def check(sent_raw: tuple[Request | None, bytes]) -> None:
        nonlocal trials, store_before, events_before
        trials += 1
        sent, raw = sent_raw
        status, headers, body = loop.run_until_complete(target.send(raw, half_close=not sent))
        answered[status or 0] = answered.get(status or 0, 0) + 1
        check_response(sent, status, headers, body)
        store_after, rest_after = target.tree()
        assert rest_after == rest_before, f"{raw!r} changed files outside the store"
        events_after = target.event_log()
        assert events_after.startswith(events_before), f"{raw!r} rewrote the event log"
        for line in events_after[len(events_before):].splitlines():
            assert orjson.loads(line)["peer"].startswith("127.0.0.1:"), line
        events_before = events_after
        if status is None or status >= 300:
            assert store_after == store_before, f"refused {raw!r} changed the store"
        else:  # a valid delete / renew: put deleted pairs back, then that is the new baseline
            target.restore()
            store_before = target.tree()[0]

    try:
        check()
    finally:
        loop.run_until_complete(target.close())
        loop.close()
    assert any(200 <= s < 300 for s in answered) and 401 in answered and 400 in answered, answered
    summary.record("bad-input-admin", trials=trials, converged=trials)
