"""The installed forms of the controller, run the way they are deployed (`-m slow`; issue 12
item 6).

- The wheel, installed into a fresh virtualenv (its dependencies taken from this .venv through
  a .pth file, since nothing may be downloaded here), runs its console script with an empty
  environment: `--version`, `schema`, `diff`, and a `run` that serves the status page from the
  package data and stops on SIGTERM.
- The single-file executable of hack/build-binary.sh, placed in `<prefix>/sbin/` and launched
  as NJet launches a copilot (`progName -p <prefix>/ -c <toml>`, an empty environment, another
  working directory, stdout and stderr into stdoutFile): against a real Pebble in store-only
  mode it issues both certificates and stops cleanly on SIGTERM; as the NJet simulator's
  copilot it gets a certificate served by NJet, verified with a handshake.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from controller.certinfo import fingerprint_pem, key_matches_cert, read_cert_info
from tests.e2e.harness import TWO_BLOCKS, Prefix, render_toml, store_only_toml
from tests.e2e.njet_harness import boot_files, controller_toml, served_fingerprint, sim_conf
from tests.fixtures.pebble import free_tcp_port
from tests.fixtures.programs import unavailable
from tests.integration.test_packaging import build_dists
from tests.support.procs import clean_env, stop_process, tail, wait_until

# a PyInstaller build takes minutes on 2 loaded cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return int(r.status), r.headers.get("Content-Type", ""), r.read().decode()


def health(base: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(get(base + "/healthz")[2]))
    except (OSError, ValueError):
        return None


def launch(program: Path, prefix: Path, toml: Path, log: Path,
           cwd: Path) -> subprocess.Popen[bytes]:
    """As NJet's copilot helper does: argv [prog, -p, <prefix>/, -c, <abs toml>], env {},
    its own cwd, stdout and stderr both into the stdoutFile (truncated)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen([str(program), "-p", f"{prefix}/", "-c", str(toml)],
                                env={}, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def run_empty_env(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], env={}, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def check_cli(program: Path, cwd: Path, prefix: Prefix) -> None:
    version = run_empty_env(program, "--version", cwd=cwd)
    assert version.returncode == 0 and version.stdout.startswith("njet-cert-manager "), version
    schema = run_empty_env(program, "schema", cwd=cwd)
    assert schema.returncode == 0, schema.stderr
    assert {"acme", "njet", "admin"} <= set(json.loads(schema.stdout)["properties"])
    usage = run_empty_env(program, "--no-such-option", cwd=cwd)
    assert usage.returncode == 64 and "usage:" in usage.stderr, usage
    diff = run_empty_env(program, "-p", f"{prefix.root}/", "-c", prefix.toml, "diff", cwd=cwd)
    assert diff.returncode == 2, diff.stdout + diff.stderr
    assert "+ issue  a.test www.a.test" in diff.stdout, diff.stdout


# -- the wheel -----------------------------------------------------------------------------


def test_the_wheel_installed_into_a_fresh_venv_runs_its_entry_point(tmp_path: Path) -> None:
    built = build_dists(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([PY, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    done = subprocess.run([PY, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-deps",
                           "--no-index", str(built.wheel)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    site = Path(subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    # the dependencies from this .venv, after the venv's own site-packages (whose controller,
    # the installed wheel's, wins); .pth files inside that folder are not run
    (site / "njcm-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run([str(vpy), "-c", "import controller; print(controller.__file__)"],
                           capture_output=True, text=True, env={}, cwd=tmp_path, check=True)
    assert where.stdout.strip().startswith(str(site)), where.stdout

    program = venv / "bin" / "njet-cert-manager"
    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(TWO_BLOCKS)
    port = free_tcp_port()
    prefix.write_toml({"acme": {"email": "wheel@example.test"}, "njet": {"apiAddress": ""},
                       "admin": {"address": f"127.0.0.1:{port}"}})
    check_cli(program, tmp_path, prefix)

    # `run` with no CA to reach: it starts, serves /healthz and the status page from the
    # installed package's data, and stops on SIGTERM
    (prefix.root / "conf" / "njet.conf").write_text("http { }\n")
    log = prefix.root / "logs" / "cert-manager.log"
    proc = launch(program, prefix.root, prefix.toml, log, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: (h := health(base)) is not None and h["in_sync"] is True,
                          30), tail(log)
        status, ctype, body = get(base + "/")
        assert status == 200 and ctype.startswith("text/html") and "<html" in body.lower()
        assert "controller started" in log.read_text()
    finally:
        code = stop_process(proc)
    assert code == 0, tail(log)
    assert "Traceback" not in log.read_text()


# -- the single-file executable ----------------------------------------------------------


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if subprocess.run([PY, "-c", "import PyInstaller"], capture_output=True).returncode:
        unavailable("PyInstaller is not installed (hack/setup.sh installs the build extra)")
    tmp = tmp_path_factory.mktemp("binary")
    done = subprocess.run(["bash", str(ROOT / "hack" / "build-binary.sh"), "--dist",
                           str(tmp / "dist"), "--work", str(tmp / "work")],
                          capture_output=True, text=True, timeout=900,
                          env=clean_env(PYTHON=PY))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    out = tmp / "dist" / "njet-cert-manager"
    head = out.read_bytes()[:4]
    assert head == b"\x7fELF", "a native executable"
    return out


def install_in_sbin(binary: Path, prefix: Path) -> Path:
    target = prefix / "sbin" / "njet-cert-manager"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, target)
    return target


@pytest.mark.pebble
def test_the_single_file_executable_issues_when_launched_like_a_copilot(
    binary: Path, pebble: Any, tmp_path: Path
) -> None:
    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(TWO_BLOCKS)
    port = free_tcp_port()
    prefix.write_toml({**store_only_toml(pebble), "admin": {"address": f"127.0.0.1:{port}"}})
    program = install_in_sbin(binary, prefix.root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check_cli(program, elsewhere, prefix)

    log = prefix.root / "logs" / "cert-manager.log"
    proc = launch(program, prefix.root, prefix.toml, log, elsewhere)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: "controller started" in tail(log, 100_000), 60), tail(log)
        assert wait_until(lambda: (h := health(base)) is not None and h["in_sync"] is True,
                          90), tail(log)
        for name, names in (("a.test", {"a.test", "www.a.test"}), ("b.test", {"b.test"})):
            crt = (prefix.certs / f"{name}.crt").read_bytes()
            assert key_matches_cert((prefix.certs / f"{name}.key").read_bytes(), crt)
            info = read_cert_info(crt)
            assert set(info.names) == names and "Pebble" in info.issuer
        status, ctype, _ = get(base + "/")
        assert status == 200 and ctype.startswith("text/html"), "status page data bundled"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    finally:
        stop_process(proc)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "controller stopped" in text and "Traceback" not in text, text[-3000:]
    assert "PRIVATE KEY" not in text
    again = run_empty_env(program, "-p", f"{prefix.root}/", "-c", prefix.toml, "diff",
                          cwd=elsewhere)
    assert again.returncode == 0 and "in sync" in again.stdout, again.stdout + again.stderr


@pytest.mark.pebble
def test_the_single_file_executable_as_the_simulators_copilot_gets_a_cert_served(
    binary: Path, pebble: Any, njetsim_factory: Any, tmp_path: Path
) -> None:
    admin = free_tcp_port()
    helper = "helper certmanager modules/njt_helper_go_copilot_module.so conf/cm.toml;\n"
    cwd = tmp_path / "sim-cwd"
    cwd.mkdir()
    sim = njetsim_factory(sim_conf(helpers=helper), files=boot_files(), start=False, cwd=cwd)
    sim.api_url = sim.api_url or f"http://127.0.0.1:{sim.ports['ctrl']}"
    program = install_in_sbin(binary, sim.prefix)
    toml = {
        "copilot": {"progName": "sbin/njet-cert-manager", "copilotType": "cert",
                    "stdoutFile": "logs/cm.log"},
        **controller_toml(pebble, sim),
        "admin": {"address": f"127.0.0.1:{admin}"},
    }
    (sim.prefix / "conf" / "cm.toml").write_text(render_toml(toml))
    assert program.exists()
    sim.start()
    prefix = Prefix(sim.prefix)
    log = sim.prefix / "logs" / "cm.log"

    def stored() -> str | None:
        p = prefix.certs / "a.test.crt"
        return fingerprint_pem(p.read_bytes()) if p.exists() else None

    assert wait_until(lambda: stored() is not None and served_fingerprint(sim) == stored(),
                      90), tail(log)
    assert wait_until(lambda: (h := health(f"http://127.0.0.1:{admin}")) is not None
                      and h["mqtt_connected"] is True, 30), tail(log)
    text = log.read_text()
    assert "controller started" in text and "Traceback" not in text, text[-3000:]
