"""Signals: SIGTERM while the CA hangs ends the real `run` process at once, cleanly.

A real `njet-cert-manager -p P -c T run` (store-only mode) renews a certificate through
hack/pebble/faultproxy.py in front of the real Pebble; the proxy holds the finalize request
unanswered (a CA that hangs). Once the request is held, SIGTERM must end the process within
EXIT_BOUND seconds (a generous bound on behaviour: without the fix it waits out the read
timeouts and retries, 90 s), with exit code 0, without one more request reaching the CA, and
with the pair written before intact (every .crt with its matching .key).

Family "signals" in the fault summary.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import render_toml, store_only_toml
from tests.faults import summary
from tests.faults.helpers import CONFIG, edit_status, leaked_private_key, run_cli, store_problems
from tests.support.hackmods import free_tcp_port, load_hack_module
from tests.support.procs import clean_env, controller_program, stop_process, tail, wait_until

pytestmark = pytest.mark.pebble

FAMILY = "signals"
DOMAIN = "a.test"
EXIT_BOUND = 10.0  # seconds from SIGTERM to exit; the fix takes well under one
CONF = """http {
    server {
        listen 127.0.0.1:8443 ssl;
        server_name a.test www.a.test;
        ssl_certificate_management acme;
    }
}
"""

FaultProxy: Any = load_hack_module("pebble/faultproxy.py").FaultProxy


def pair(prefix: Path) -> tuple[bytes, bytes]:
    certs = prefix / ".lego" / "certificates"
    return (certs / f"{DOMAIN}.crt").read_bytes(), (certs / f"{DOMAIN}.key").read_bytes()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_stop_signal_while_the_ca_hangs_on_finalize_exits_at_once_and_sends_nothing_more(
    pebble: Any, tmp_path: Path, signum: signal.Signals
) -> None:
    state = pebble.state_dir
    proxy = FaultProxy(pebble.listen_port, cert=state / "server.pem", key=state / "server.key",
                       upstream_ca=pebble.ca_bundle).start()
    proc: subprocess.Popen[bytes] | None = None
    log = tmp_path / "controller.log"
    try:
        prefix = tmp_path / "njet"
        (prefix / "conf").mkdir(parents=True)
        (prefix / "conf" / "njet.conf").write_text(CONF)
        toml = store_only_toml(pebble, acmeCaDir=proxy.directory_url)
        toml["admin"] = {"address": f"127.0.0.1:{free_tcp_port()}"}
        (prefix / CONFIG).write_text(render_toml(toml))
        first = run_cli(prefix)
        assert first.returncode == 0, first.output[-2000:]
        written = pair(prefix)

        # a forced renewal whose finalize the CA never answers
        edit_status(prefix, DOMAIN, force_renew=True)
        proxy.stall(path="^/finalize-order/")
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [controller_program(), "-p", str(prefix), "-c", CONFIG, "run"],
                stdout=out, stderr=subprocess.STDOUT, env=clean_env(), cwd="/")
        held = wait_until(lambda: proxy.stalled() >= 1 or proc.poll() is not None, timeout=60)
        assert held and proc.poll() is None, f"the stall was not reached:\n{tail(log)}"
        seen = proxy.counts()

        proc.send_signal(signum)
        try:
            code: int | None = proc.wait(EXIT_BOUND)
        except subprocess.TimeoutExpired:
            code = None
        after = proxy.counts()
        problems = store_problems(prefix)
        intact = pair(prefix) == written
        ok = code == 0 and after == seen and not problems and intact
        summary.record(FAMILY, trials=1, converged=int(ok), lost=int(not intact))

        assert code is not None, f"still running {EXIT_BOUND:g}s after the signal:\n{tail(log)}"
        assert code == 0, tail(log)
        sent = {p: n - seen.get(p, 0) for p, n in after.items() if n != seen.get(p, 0)}
        assert not sent, f"requests reached the CA after the signal: {sent}"
        assert not problems, problems
        assert intact, "the pair written before the signal changed"
        text = log.read_text(errors="replace")
        assert "controller stopped" in text, tail(log)
        assert not leaked_private_key(text)
    finally:
        stop_process(proc, timeout=1.0)
        proxy.stop()
