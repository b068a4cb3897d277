"""controller/logs.py: one handler, one format and one key filter for every logger.

Adapter modules (plain `logging.getLogger(__name__)`) and third-party libraries reach the same
handler as `log_event`; lines are JSON with ts, level, msg, logger first under `[log] format =
"json"`; a line carrying private key text is suppressed whole, whatever part of the record
carries it; store recovery is logged once.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controller.adapters.store import fsutil
from controller.adapters.store.statusfile import StatusFiles
from controller.config import parse_config
from controller.logs import log_event, reset_logging, setup_logging
from controller.paths import StorePaths
from tests.logcapture import SUPPRESSED, capture_logs

LEGO = "controller.adapters.store.lego"


@pytest.fixture(scope="module")
def key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(autouse=True)
def _no_handler_left() -> Iterator[None]:
    yield
    reset_logging()


def docs(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def key_body(pem: str) -> list[str]:
    """The base64 lines of a PEM: what must never come out, headers aside."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


# -- one format for every module -----------------------------------------------------------------


def test_an_adapter_record_comes_out_as_json_with_the_common_fields() -> None:
    with capture_logs(fmt="json") as logs:
        logging.getLogger(LEGO).warning("ignoring unreadable resource file %s: %s", "/x", "bad")
    [doc] = docs(logs.text)
    assert list(doc)[:4] == ["ts", "level", "msg", "logger"]
    assert doc["level"] == "warning"
    assert doc["msg"] == "ignoring unreadable resource file /x: bad"
    assert doc["logger"] == LEGO
    ts = datetime.fromisoformat(doc["ts"])
    assert ts.utcoffset() == UTC.utcoffset(None)


def test_adapter_info_lines_are_no_longer_dropped() -> None:
    with capture_logs(fmt="json") as logs:
        logging.getLogger("controller.adapters.admin.server").info("admin API listening on *:1")
        logging.getLogger("controller.adapters.mqtt.listener").info("MQTT: subscribed to t")
    assert [(d["logger"], d["msg"]) for d in docs(logs.text)] == [
        ("controller.adapters.admin.server", "admin API listening on *:1"),
        ("controller.adapters.mqtt.listener", "MQTT: subscribed to t"),
    ]


def test_a_real_adapter_warning_takes_the_same_path(tmp_path: Path) -> None:
    paths = StorePaths(tmp_path / "njet")
    files = StatusFiles(paths)
    paths.status.mkdir(parents=True)
    paths.status_file("a.test").write_bytes(b"{not json")
    with capture_logs(fmt="json") as logs:
        assert files.load("a.test") is None
    [doc] = docs(logs.text)
    assert doc["logger"] == "controller.adapters.store.statusfile"
    assert doc["level"] == "warning"
    assert str(paths.status_file("a.test")) in doc["msg"]


def test_an_event_has_its_fields_after_the_common_ones() -> None:
    with capture_logs(fmt="json") as logs:
        log_event("decision", action="renew", domain="a.test", reason="RenewalDue")
    [doc] = docs(logs.text)
    assert list(doc) == ["ts", "level", "msg", "logger", "action", "domain", "reason"]
    assert (doc["level"], doc["msg"], doc["domain"]) == ("info", "decision", "a.test")
    assert doc["logger"] == "njcm"  # called from outside controller/


def test_the_text_shape_of_an_event_stays_and_other_records_name_their_logger() -> None:
    with capture_logs() as logs:
        log_event("decision", action="renew", domain="a.test", reason="RenewalDue")
        logging.getLogger(LEGO).warning("store: something odd")
    event, plain = logs.lines()
    assert event.split(" ", 1)[1] == "INFO    decision action=renew domain=a.test reason=RenewalDue"
    assert plain.split(" ", 1)[1] == f"WARNING store: something odd logger={LEGO}"


def test_an_exception_keeps_its_error_and_traceback() -> None:
    with capture_logs(fmt="json") as logs:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("controller.adapters.admin.server").exception("admin API: failed")
    [doc] = docs(logs.text)
    assert doc["error"] == "ValueError('boom')"
    assert "Traceback" in doc["traceback"] and "ValueError: boom" in doc["traceback"]


# -- verbosity and third-party loggers -------------------------------------------------------------


def test_third_party_info_is_dropped_and_its_warning_comes_out_formatted() -> None:
    with capture_logs(verbosity=2) as logs:
        gmqtt = logging.getLogger("gmqtt")
        gmqtt.setLevel(logging.DEBUG)  # even when a library lowers its own level
        gmqtt.info("[CONNECTION MADE]")
        gmqtt.debug("ping")
        logging.getLogger("aiohttp.access").info("GET / 200")
        gmqtt.warning("[CONNECTION LOST]")
        logging.getLogger("asyncio").error("Task exception was never retrieved")
    warning, error = logs.lines()
    assert warning.split(" ", 1)[1] == "WARNING [CONNECTION LOST] logger=gmqtt"
    assert error.split(" ", 1)[1] == "ERROR   Task exception was never retrieved logger=asyncio"
    datetime.fromisoformat(warning.split(" ", 1)[0])


def test_verbosity_applies_to_every_controller_module() -> None:
    with capture_logs(verbosity=0) as logs:
        logging.getLogger(LEGO).debug("hidden")
        log_event("hidden too", level=logging.DEBUG)
        logging.getLogger(LEGO).info("shown")
    assert [line.split()[2] for line in logs.lines()] == ["shown"]
    with capture_logs(verbosity=2) as logs:
        logging.getLogger(LEGO).debug("shown")
        log_event("shown", level=logging.DEBUG)
    assert len(logs.lines()) == 2
    with capture_logs(verbosity=-1) as logs:
        log_event("hidden", level=logging.INFO)
        logging.getLogger(LEGO).info("hidden")
        logging.getLogger(LEGO).warning("shown")
    assert len(logs.lines()) == 1


def test_setup_logging_twice_does_not_duplicate_lines() -> None:
    earlier, buf = io.StringIO(), io.StringIO()
    setup_logging(stream=earlier)
    setup_logging(fmt="json", stream=buf)
    setup_logging(fmt="json", stream=buf)
    logging.getLogger(LEGO).warning("once")
    log_event("once too")
    assert earlier.getvalue() == ""
    assert [d["msg"] for d in docs(buf.getvalue())] == ["once", "once too"]


def test_without_a_stream_it_writes_to_the_current_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging()
    logging.getLogger(LEGO).warning("to stderr")
    assert "WARNING to stderr" in capsys.readouterr().err


# -- private keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_key_material_never_comes_out(fmt: str, key_pem: str) -> None:
    api = logging.getLogger("controller.adapters.njet.api")
    with capture_logs(fmt=fmt, verbosity=2, allow_suppressed=True) as logs:
        logging.getLogger(LEGO).warning("read %s", key_pem)  # in the message
        api.debug("body %r", key_pem.encode())  # as bytes
        api.error("body %s", {"certificateKey": "data:..."})  # NJet's key field
        log_event("stored", domain="a.test", key=key_pem)  # in a field
        log_event("stored", domain="a.test", body={"pem": key_pem.encode()})  # nested
        try:
            raise RuntimeError(f"cannot parse {key_pem}")
        except RuntimeError as exc:
            logging.getLogger("controller.adapters.mqtt.listener").exception("handler failed")
            log_event("failed", level=logging.ERROR, error=repr(exc))
        logging.getLogger("acme.client").warning("sent %s", key_pem)  # a third-party logger
    text = logs.text
    assert "PRIVATE KEY" not in text and "certificateKey" not in text
    assert not any(line in text for line in key_body(key_pem))
    lines = logs.lines()
    assert len(lines) == 8 == len(logs.records)  # each record: one line, suppressed whole
    assert all(SUPPRESSED in line for line in lines)
    if fmt == "json":
        assert all(d["level"] == "error" and d["msg"] == SUPPRESSED for d in docs(text))


def test_a_suppressed_line_fails_the_capture_that_did_not_expect_it(key_pem: str) -> None:
    with pytest.raises(AssertionError, match="key material reached a log call"):  # noqa: SIM117
        with capture_logs():
            logging.getLogger(LEGO).warning("read %s", key_pem)


# -- store recovery --------------------------------------------------------------------------------


async def test_store_recovery_is_logged_once(tmp_path: Path) -> None:
    from controller.app import App  # the composition root: imported by this test alone

    config = parse_config({"njet": {"apiAddress": ""}}, prefix=tmp_path / "njet")
    app = App(config)
    app.paths.certificates.mkdir(parents=True)
    temp = app.paths.certificates / f".a.test.crt{fsutil.TEMP_INFIX}0badc0de"
    temp.write_bytes(b"half a cert")
    with capture_logs(fmt="json") as logs:
        await app.prepare()
    assert not temp.exists()
    mentions = [d for d in docs(logs.text) if str(temp) in json.dumps(d)]
    assert len(mentions) == 1
    assert mentions[0]["msg"] == "store recovery" and mentions[0]["logger"] == "controller.app"
