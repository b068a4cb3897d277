"""The operator commands end to end, store-only, with a real Pebble: `certs show` (conditions,
json, yaml, colour only on a terminal), `certs delete` into quarantine, `status` with and
without a running controller, and GET /api/v1/events from a running `run`."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import TWO_BLOCKS, Prefix, store_only_toml
from tests.fixtures.pebble import free_tcp_port
from tests.support.procs import clean_env

pytestmark = pytest.mark.pebble

ESC = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def issued(tmp_path: Path, pebble: Any) -> Prefix:
    """A prefix whose two certificates a `reconcile` issued from Pebble."""
    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(TWO_BLOCKS)
    toml = store_only_toml(pebble)
    toml["admin"] = {"address": f"127.0.0.1:{free_tcp_port()}"}
    prefix.write_toml(toml)
    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr + run.stdout
    return prefix


def on_a_terminal(prefix: Prefix, *args: str, env: dict[str, str] | None = None) -> str:
    """The CLI's output as a terminal receives it (a pty for stdout and stderr)."""
    argv = [sys.executable, "-m", "controller.cli", "-p", str(prefix.root),
            "-c", "conf/cert-manager.toml", *args]
    main, child = pty.openpty()
    proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, cwd="/",
                            env=env or clean_env(TERM="xterm"))
    os.close(child)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 60)
            if not ready:
                break
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed its side
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(main)
        assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode(errors="replace")


def test_certs_show_has_persisted_conditions_in_every_format(issued: Prefix) -> None:
    out = issued.cli("certs", "show", "a.test", "-o", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    ready = {c["type"]: c for c in doc["conditions"]}
    assert ready["Ready"]["status"] == "True" and ready["Ready"]["reason"] == "Issued"
    assert ready["Ready"]["last_transition"].startswith("20")
    assert ready["Issuing"]["status"] == "False"
    assert doc["spec"]["names"] == ["a.test", "www.a.test"]
    assert doc["spec"]["challenge_type"] == "http-01" and doc["spec"]["key_type"] == "ec256"
    assert doc["spec"]["origin"].endswith("njet.conf:3")
    assert "Pebble" in doc["certificate"]["issuer"] and doc["store_only"] is True
    assert "renewBeforeDays" in doc["renewal"]["why"] or "lifetime" in doc["renewal"]["why"]
    assert [(e["kind"], e["action"], e["result"]) for e in doc["events"]] == [
        ("controller", "issue", "issued")]
    status_file = json.loads((issued.root / ".lego" / "status" / "a.test.json").read_text())
    saved = status_file["conditions"][0]
    assert saved["type"] == "Ready" and datetime.fromisoformat(saved["last_transition"]) == (
        datetime.fromisoformat(ready["Ready"]["last_transition"]))

    as_yaml = issued.cli("certs", "show", "a.test", "-o", "yaml")
    assert as_yaml.returncode == 0
    assert yaml.safe_load(as_yaml.stdout) == doc

    for args in (("certs", "show", "a.test"), ("certs", "show", "a.test", "-o", "wide"),
                 ("certs", "list"), ("status",)):
        piped = issued.cli(*args)
        assert piped.returncode == 0, piped.stderr
        assert "\x1b[" not in piped.stdout + piped.stderr, args
    assert "Ready" in issued.cli("certs", "show", "a.test").stdout

    coloured = on_a_terminal(issued, "certs", "show", "a.test")
    assert ESC.search(coloured), coloured
    assert "Ready" in ESC.sub("", coloured)
    no_colour = on_a_terminal(issued, "certs", "show", "a.test",
                              env=clean_env(TERM="xterm", NO_COLOR="1"))
    assert "Ready" in no_colour and "\x1b[" not in no_colour


def test_reconcile_draws_a_bar_on_a_terminal_and_lines_otherwise(tmp_path: Path,
                                                                 pebble: Any) -> None:
    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(TWO_BLOCKS)
    prefix.write_toml(store_only_toml(pebble))
    out = on_a_terminal(prefix, "reconcile")
    assert "pass 1" in out and "2/2" in out, out
    plain = prefix.cli("reconcile", "-v")  # in sync now: nothing to do, no progress at all
    assert plain.returncode == 0 and "(1/" not in plain.stderr
    (prefix.certs / "b.test.crt").unlink()
    (prefix.certs / "b.test.key").unlink()
    again = prefix.cli("reconcile")
    assert again.returncode == 0, again.stderr
    assert "issued b.test [Missing] (1/1)" in again.stderr
    assert "\x1b[" not in again.stderr + again.stdout


def test_delete_moves_into_quarantine_and_status_reads_the_store(issued: Prefix) -> None:
    status = issued.cli("status", "-o", "json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["source"] == "store" and doc["certificates"] == 2 and doc["ready"] == 2
    assert doc["soonest_expiry"]["domain"] in ("a.test", "b.test")

    gone = issued.cli("certs", "delete", "b.test")
    assert gone.returncode == 0, gone.stderr
    assert "quarantine" in gone.stdout and "still desired" in gone.stdout
    assert not (issued.certs / "b.test.crt").exists()
    entries = list((issued.root / ".lego" / "quarantine").iterdir())
    assert [e.name.split(".2")[0] for e in entries] == ["b.test"]
    assert {p.name for p in entries[0].iterdir()} >= {"b.test.crt", "b.test.key"}
    again = issued.cli("certs", "delete", "b.test")
    assert again.returncode == 1 and "no certificate for b.test" in again.stderr
    after = yaml.safe_load(issued.cli("status", "-o", "yaml").stdout)
    assert after["certificates"] == 1 and after["quarantined"] == 1


def test_status_and_events_come_from_a_running_controller(issued: Prefix) -> None:
    toml = issued.toml.read_text()
    address = re.search(r'address = "([^"]+)"', toml)
    assert address is not None
    base = f"http://{address.group(1)}"
    log = (issued.root / "run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli", "-p", str(issued.root),
                             "-c", "conf/cert-manager.toml", "run"], stdout=log,
                            stderr=subprocess.STDOUT, cwd="/", env=clean_env())
    try:
        deadline = time.monotonic() + 60
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                    health = json.loads(r.read())
                if health.get("reconciles"):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert health.get("reconciles"), (issued.root / "run.log").read_text()[-2000:]
        status = issued.cli("status", "-o", "json")
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert doc["source"] == "controller" and doc["pid"] == proc.pid and doc["ok"] is True
        table = issued.cli("status")
        assert f"pid {proc.pid}" in table.stdout

        with urllib.request.urlopen(f"{base}/api/v1/events?domain=a.test", timeout=5) as r:
            events = json.loads(r.read())["events"]
        assert ("controller", "issue", "issued") in [
            (e["kind"], e["action"], e["result"]) for e in events]
        assert {e["domain"] for e in events} == {"a.test"}

        gone = issued.cli("certs", "delete", "a.test")  # through the running controller
        assert gone.returncode == 0, gone.stderr
        assert "the running controller" in gone.stdout and "quarantine/" in gone.stdout
        with urllib.request.urlopen(f"{base}/api/v1/events?limit=1", timeout=5) as r:
            last = json.loads(r.read())["events"]
        assert len(last) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log.close()


def test_certs_show_probes_each_listen_of_a_running_njet(pebble: Any,
                                                         njetsim_factory: Any) -> None:
    from tests.e2e.njet_harness import boot_files, controller_toml, sim_conf

    sim = njetsim_factory(sim_conf(), files=boot_files())
    prefix = Prefix(sim.prefix)
    prefix.write_toml(controller_toml(pebble, sim))
    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr
    doc = json.loads(prefix.cli("certs", "show", "a.test", "-o", "json").stdout)
    assert doc["store_only"] is False and doc["served"], doc
    assert all(s["matches_stored"] and s["fingerprint"] == doc["certificate"]["fingerprint"]
               for s in doc["served"])
    ready = doc["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Issued")
    assert "served by NJet" in ready["message"]
    assert doc["applied"]["fingerprint"] == doc["certificate"]["fingerprint"]
    table = prefix.cli("certs", "show", "a.test").stdout
    assert "(= stored)" in table
