"""Launched by NJet (the simulator) as a copilot: empty environment, a working directory that
is not the prefix, stdout+stderr into stdoutFile; a reload hands over to the new instance."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from controller.certinfo import fingerprint_pem
from tests.e2e.harness import Prefix, render_toml
from tests.e2e.njet_harness import (
    boot_files,
    controller_program,
    controller_toml,
    served_fingerprint,
    sim_conf,
    wait_until,
)
from tests.fixtures.pebble import free_tcp_port

pytestmark = pytest.mark.pebble


def health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return dict(json.loads(r.read()))
    except OSError:
        return None


def test_launched_as_a_copilot_it_converges_and_a_reload_hands_over_cleanly(
    pebble: Any, njetsim_factory: Any, tmp_path: Any
) -> None:
    admin = free_tcp_port()
    helper = "helper certmanager modules/njt_helper_go_copilot_module.so conf/cm.toml;\n"
    sim = njetsim_factory(sim_conf(helpers=helper), files=boot_files(), start=False, cwd=tmp_path)
    sim.api_url = sim.api_url or f"http://127.0.0.1:{sim.ports['ctrl']}"
    toml = controller_toml(pebble, sim)
    toml = {
        "copilot": {
            "progName": controller_program(),
            "copilotType": "cert",
            "stdoutFile": "logs/cm.log",
            "stderrFile": "logs/cm.err",
        },
        **toml,
        "admin": {"address": f"127.0.0.1:{admin}"},
    }
    (sim.prefix / "conf" / "cm.toml").write_text(render_toml(toml))
    sim.start()

    prefix = Prefix(sim.prefix)
    log = sim.prefix / "logs" / "cm.log"

    def stored() -> str | None:
        p = prefix.certs / "a.test.crt"
        return fingerprint_pem(p.read_bytes()) if p.exists() else None

    assert wait_until(lambda: stored() is not None and served_fingerprint(sim) == stored(), 40), (
        log.read_text() if log.exists() else "no copilot log"
    )
    first = stored()
    first_pid = (health(admin) or {}).get("pid")
    text = log.read_text()
    assert "controller started" in text and "Traceback" not in text
    assert not (sim.prefix / "logs" / "cm.err").exists(), "stderr goes into stdoutFile"

    sim.reload()
    assert wait_until(
        lambda: (
            (h := health(admin)) is not None
            and h.get("pid") != first_pid
            and h.get("in_sync") is True
        ),
        40,
    ), log.read_text()
    after = log.read_text()  # truncated at the new launch: only the new instance's lines
    assert "controller started" in after and "Traceback" not in after
    assert stored() == first, "a reload must not re-issue"
    assert served_fingerprint(sim) == first
    assert "PRIVATE KEY" not in after
