"""A big njet.conf never blocks the event loop (issue 13, item 12): while a real `run` process
parses it (and scans the store), /healthz answers at once, and SIGTERM ends the process in a
moment instead of after the parse.

The conf holds BLOCKS server blocks that are not managed (nothing to order, no CA needed); one
parse of the default run's 60,000 blocks takes about 2.5 s on the development machine, and the
start-up pass parses twice (once as it is, once fresh for the probing pass). Every /healthz
sent from the moment the admin port is bound is timed; a request that reaches a blocked loop
waits for the rest of the parse, so LATENCY_BOUND (1 s) tells a free loop from a blocked one.
SIGTERM is sent while /healthz still says no reconcile finished, i.e. during the start-up
parses; EXIT_BOUND is far below what waiting for them takes. The 50 MB case (about 20 s per
parse, 29 s to stop before the fix) runs under `-m slow`.

Family "signals" in the fault summary.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.faults import summary
from tests.faults.helpers import CONFIG
from tests.support.hackmods import free_tcp_port
from tests.support.procs import clean_env, controller_program, stop_process, tail

FAMILY = "signals"
LATENCY_BOUND = 1.0  # seconds for one /healthz while the conf is parsed
EXIT_BOUND = 5.0  # seconds from SIGTERM to exit, "a few" (the fix takes a fraction of one;
# freeing a 50 MB parse and interpreter exit on a loaded 2-core machine take the rest)
DEFAULT_BLOCKS = 60_000  # ~6.7 MB, ~2.5 s per parse
SLOW_BLOCKS = 450_000  # ~50 MB, ~20 s per parse


def big_conf(blocks: int) -> str:
    body = "".join(
        f"    server {{ listen 127.0.0.1:8443 ssl; server_name s{i}.test www.s{i}.test; "
        "location / { return 200 ok; } }\n" for i in range(blocks))
    return "http {\n" + body + "}\n"


def healthz(port: int) -> tuple[float, dict[str, object]] | None:
    """(seconds the answer took, the document); None while nothing listens yet."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=60) as r:
            body = r.read()
    except urllib.error.HTTPError as err:  # 503 while degraded: still an answer
        body = err.read()
    except (ConnectionError, urllib.error.URLError):
        return None
    return time.monotonic() - started, json.loads(body)


def check(tmp_path: Path, blocks: int, *, watch: float) -> None:
    prefix = tmp_path / "njet"
    (prefix / "conf").mkdir(parents=True)
    (prefix / "conf" / "njet.conf").write_text(big_conf(blocks))
    port = free_tcp_port()
    (prefix / CONFIG).write_text(
        '[njet]\napiAddress = ""\n[acme]\nacmeCaDir = "https://127.0.0.1:9/dir"\n'
        f'[admin]\naddress = "127.0.0.1:{port}"\n')
    log = tmp_path / "controller.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [controller_program(), "-p", str(prefix), "-c", CONFIG, "run"],
                stdout=out, stderr=subprocess.STDOUT, env=clean_env(), cwd="/")
        deadline = time.monotonic() + 60
        first = None
        while first is None and proc.poll() is None and time.monotonic() < deadline:
            first = healthz(port)
            if first is None:
                time.sleep(0.02)
        assert first is not None, f"the admin API never answered:\n{tail(log)}"
        answers = [first]
        watched_until = time.monotonic() + watch
        while time.monotonic() < watched_until and answers[-1][1].get("reconciles") == 0:
            got = healthz(port)
            assert got is not None, tail(log)
            answers.append(got)
            time.sleep(0.05)
        took_each = [seconds for seconds, _ in answers]
        during = [seconds for seconds, doc in answers if doc.get("reconciles") == 0]
        mid_parse = answers[-1][1].get("reconciles") == 0
        code: int | None = None
        took = float("inf")
        if mid_parse:
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            try:
                code = proc.wait(EXIT_BOUND * 5)
            except subprocess.TimeoutExpired:
                code = None
            took = time.monotonic() - sent
        ok = (mid_parse and len(during) >= 3 and max(took_each) < LATENCY_BOUND
              and code == 0 and took < EXIT_BOUND)
        summary.record(FAMILY, trials=1, converged=int(ok))

        assert max(took_each) < LATENCY_BOUND, (
            f"/healthz took up to {max(took_each):.2f}s while njet.conf was parsed: {took_each}")
        assert mid_parse, f"the start-up pass ended within {watch}s: the conf is too small"
        assert len(during) >= 3, f"only {len(during)} /healthz answers during the parse"
        assert code is not None, f"still running {EXIT_BOUND * 5:g}s after SIGTERM:\n{tail(log)}"
        assert code == 0 and took < EXIT_BOUND, (
            f"exit {code} {took:.2f}s after SIGTERM (the parse was still running)\n{tail(log)}")
        assert "controller stopped" in log.read_text(errors="replace"), tail(log)
    finally:
        stop_process(proc, timeout=1.0)


def test_healthz_answers_and_sigterm_ends_run_while_njet_conf_is_parsed(tmp_path: Path) -> None:
    check(tmp_path, DEFAULT_BLOCKS, watch=1.5)


@pytest.mark.slow
def test_a_50_mb_njet_conf_neither_silences_the_admin_api_nor_delays_sigterm(
    tmp_path: Path,
) -> None:
    check(tmp_path, SLOW_BLOCKS, watch=5.0)
