"""The README's first command, `bash hack/demo.sh`, run as a user runs it (setup skipped with
NJCM_DEMO_SKIP_SETUP=1: the suite already runs from the installed .venv): it shows the bootstrap
certificate and then Pebble's for every name from real handshakes, follows a rename, exits 0,
and leaves no process running and no port bound. A failing step and Ctrl-C clean up too."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.programs import require_program
from tests.support.procs import ROOT, clean_env

pytestmark = pytest.mark.pebble

NAMES = ("shop.example.test", "www.shop.example.test", "api.example.test")
RENAMED = ("store.example.test", "www.store.example.test", "api.example.test")


def demo_env(root: Path, **extra: str) -> dict[str, str]:
    require_program("pebble", "/usr/bin/pebble")
    require_program("mosquitto", "/usr/sbin/mosquitto")
    return clean_env(NJCM_DEMO_SKIP_SETUP="1", NJCM_DEMO_DIR=str(root), **extra)


def sections(out: str) -> dict[str, str]:
    """The demo's output by step header ("2/7 before: ..." -> its lines)."""
    parts = re.split(r"^== (\d+/\d+) .*$", out, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def served_rows(text: str) -> dict[str, dict[str, str]]:
    """The handshake table of one section: SNI -> its columns."""
    lines = [ln.strip() for ln in text.splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("SNI "))
    titles = re.split(r"\s{2,}", lines[start])
    rows = {}
    for ln in lines[start + 1:]:
        cells = re.split(r"\s{2,}", ln)
        if len(cells) != len(titles):
            break
        rows[cells[0]] = dict(zip(titles, cells, strict=True))
    return rows


def assert_nothing_left(root: Path) -> None:
    record: dict[str, Any] = json.loads((root / "demo.json").read_text())
    marker = record["marker"].encode()
    assert record["marker"] == str(root)
    assert {"pebble", "pebble_dns", "njet-sim", "copilot-0"} <= set(record["pids"])
    for name, pid in record["pids"].items():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone
        assert marker not in argv and b"dns.py" not in argv, f"{name} (pid {pid}) still runs"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            assert marker not in argv, f"pid {proc.name} still runs: {argv!r}"
    for name, port in record["ports"].items():
        kind = socket.SOCK_DGRAM if name.endswith("_udp") else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not bound
            s.bind(("127.0.0.1", port))  # OSError: still bound


def test_the_demo_shows_njet_switch_to_acme_certificates_and_follow_a_rename(
    tmp_path: Path,
) -> None:
    root = tmp_path / "demo"
    run = subprocess.run(["bash", "hack/demo.sh"], cwd=ROOT, env=demo_env(root),
                         capture_output=True, text=True, timeout=240)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    steps = sections(out)
    assert list(steps) == [f"{n}/7" for n in range(1, 8)], out

    before = served_rows(steps["2/7"])
    assert set(before) == set(NAMES), steps["2/7"]
    for name in NAMES:
        assert "bootstrap" in before[name]["ISSUER"], before[name]
    assert re.search(r"^\s+\+ issue\s+api\.example\.test .*challenge=tls", steps["2/7"], re.M)
    assert re.search(r"^\s+\+ issue\s+shop\.example\.test www\.shop\.example\.test ",
                     steps["2/7"], re.M)
    assert "exit 2 (changes pending)" in steps["2/7"]

    assert "exit 0 (in sync)" in steps["3/7"]
    assert "challenge location added domain=shop.example.test" in steps["3/7"]  # http-01 via NJet
    after = served_rows(steps["4/7"])
    assert set(after) == set(NAMES), steps["4/7"]
    for name in NAMES:
        assert "Pebble" in after[name]["ISSUER"], after[name]
        assert name in after[name]["SAN"].split(", ")
    assert after["www.shop.example.test"]["SUBJECT"] == "CN=shop.example.test"

    renamed = served_rows(steps["6/7"])
    assert set(renamed) == set(RENAMED), steps["6/7"]
    for name in RENAMED:
        assert "Pebble" in renamed[name]["ISSUER"], renamed[name]
        assert name in renamed[name]["SAN"].split(", ")
    assert "exit 0 (in sync)" in steps["5/7"]
    assert "demo OK" in out and "PRIVATE KEY" not in out + run.stderr
    assert_nothing_left(root)


def test_a_failing_step_is_named_and_everything_is_stopped(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    run = subprocess.run(["bash", "hack/demo.sh"], cwd=ROOT,
                         env=demo_env(root, NJCM_DEMO_TIMEOUT="0"),
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "demo FAILED at step 3 (add the cert manager" in run.stdout
    assert "not in sync within 0 s" in run.stdout
    assert "== 7/7 stop everything" in run.stdout
    assert_nothing_left(root)


def test_ctrl_c_stops_everything_it_started(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    proc = subprocess.Popen(["bash", "hack/demo.sh"], cwd=ROOT, env=demo_env(root),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.lstrip().startswith("/healthz of pid"):  # the copilot runs
                proc.send_signal(signal.SIGINT)  # bash exec'd the driver: this pid is python
                break
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(seen) + rest
    assert proc.returncode == 130, out
    assert "demo interrupted" in out and "== 7/7 stop everything" in out
    assert_nothing_left(root)
