"""Packaging and deployment files, as far as they can be checked without a container engine or
a systemd machine (issue 12 item 6).

- The wheel and the sdist are built (`python -m build`, the wheel from the sdist) from a copy
  of the source tree: both hold every file of the `controller` package, data included, and
  pass `twine check --strict`.
- The Dockerfile has a HEALTHCHECK, a non-root USER and a VOLUME for NJet's prefix, and its
  HEALTHCHECK command, run as written, is healthy against a live controller's `/healthz`
  and unhealthy while it answers 503 or nothing.
- deploy/systemd's unit passes `systemd-analyze verify` (ExecStart pointed at a real file),
  and deploy/compose.yaml runs the image beside NJet on one prefix volume and network.

The slow ones (the wheel installed into a fresh virtualenv, the single-file executable) are in
test_packaging_slow.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from controller.config_sections import AdminSection
from tests.e2e.harness import Prefix
from tests.fixtures.pebble import free_tcp_port
from tests.fixtures.programs import require_program, unavailable
from tests.support.procs import clean_env, controller_program, stop_process, tail, wait_until

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def source_files(root: Path = ROOT) -> list[str]:
    """The files of the tree as git sees them: tracked or new, never ignored ones."""
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        unavailable("git is needed to list the source tree")
    out = subprocess.run([git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True).stdout
    return sorted({p for p in out.decode().split("\0") if p and (root / p).is_file()})


def copy_tree(dest: Path) -> Path:
    for rel in source_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    return dest


@dataclass(frozen=True)
class Built:
    src: Path
    wheel: Path
    sdist: Path


def build_dists(tmp: Path) -> Built:
    """sdist, then the wheel from the sdist, from a copy of the tree (nothing written here)."""
    for module in ("build", "setuptools"):
        if subprocess.run([PY, "-c", f"import {module}"], capture_output=True).returncode:
            unavailable(f"{module} is not installed (hack/setup.sh installs the dev extra)")
    src = copy_tree(tmp / "src")
    out = tmp / "dist"
    done = subprocess.run([PY, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return Built(src, wheels[0], sdists[0])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_dists(tmp_path_factory.mktemp("packaging"))


def package_files(src: Path) -> set[str]:
    """Every file of the controller package in the source tree, data files included."""
    return {p.relative_to(src).as_posix() for p in (src / "controller").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_the_wheel_holds_the_whole_package_with_its_data_and_the_entry_point(
    built: Built,
) -> None:
    names = set(zipfile.ZipFile(built.wheel).namelist())
    expected = package_files(built.src)
    assert "controller/cli.py" in expected
    missing = sorted(expected - names)
    assert not missing, f"not in {built.wheel.name} (package data in pyproject.toml?): {missing}"
    name, version = built.wheel.name.split("-")[:2]
    assert {n.split("/", 1)[0] for n in names} == {"controller", f"{name}-{version}.dist-info"}
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]
    dist_info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry = zipfile.ZipFile(built.wheel).read(dist_info).decode()
    assert re.search(r"^njet-cert-manager = controller\.cli:main$", entry, re.M), entry
    assert built.wheel.name.endswith("-py3-none-any.whl")


def test_the_sdist_holds_the_package_the_docs_and_the_deployment_files(built: Built) -> None:
    with tarfile.open(built.sdist) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers()
                 if m.isfile() and "/" in m.name}
    expected = package_files(built.src) | {
        "pyproject.toml", "README.md", "MANIFEST.in", "Dockerfile", "hack/build-binary.sh",
        "deploy/compose.yaml", "deploy/systemd/njet-cert-manager.service",
        "docs/operations.md", "docs/migrating.md", "docs/config-reference.md",
        "docs/packaging.md",
    }
    missing = sorted(expected - names)
    assert not missing, f"not in {built.sdist.name}: {missing}"
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]


def test_both_pass_twine_check(built: Built) -> None:
    if subprocess.run([PY, "-c", "import twine"], capture_output=True).returncode:
        unavailable("twine is not installed (hack/setup.sh installs the dev extra)")
    done = subprocess.run([PY, "-m", "twine", "check", "--strict", str(built.wheel),
                           str(built.sdist)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2, done.stdout


# -- Dockerfile --------------------------------------------------------------------------


def dockerfile_instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        word, _, rest = text.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return out


def healthcheck_argv() -> list[str]:
    checks = [args for word, args in dockerfile_instructions() if word == "HEALTHCHECK"]
    assert len(checks) == 1, "one HEALTHCHECK"
    options, sep, command = checks[0].partition("CMD ")
    assert sep, checks[0]
    assert re.search(r"--interval=\S+", options) and re.search(r"--timeout=\S+", options)
    argv = json.loads(command)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), command
    return argv


def test_the_dockerfile_has_a_healthcheck_a_non_root_user_and_the_prefix_volume() -> None:
    instructions = dockerfile_instructions()
    words = [w for w, _ in instructions]
    assert words[0] == "FROM"
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:"), users
    # the user is created before it is used, with the uid the docs name
    run = " ".join(args for word, args in instructions if word == "RUN")
    assert re.search(rf"useradd .*--uid 10001 .*\b{re.escape(users[-1])}\b", run), run
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
    volumes = [json.loads(args) for word, args in instructions if word == "VOLUME"]
    assert ["/usr/local/njet"] in volumes, volumes
    entry = [json.loads(args) for word, args in instructions if word == "ENTRYPOINT"]
    assert entry == [["njet-cert-manager"]]
    argv = healthcheck_argv()
    assert argv[:2] == ["python", "-c"], argv
    env = dict(args.split("=", 1) for word, args in instructions if word == "ENV")
    # the default URL is where the controller's admin API listens by default
    assert env["NJCM_HEALTHZ_URL"] == f"http://{AdminSection().address}/healthz"


def test_what_the_dockerfile_copies_is_enough_to_build_the_package(tmp_path: Path) -> None:
    """The image's `pip install .` sees only what COPY put into WORKDIR: a wheel built from
    just that holds the whole package (no file pyproject.toml needs is left out)."""
    instructions = dockerfile_instructions()
    workdir = next(args for word, args in instructions if word == "WORKDIR")
    context = tmp_path / "context"
    for word, args in instructions:
        if word != "COPY":
            continue
        *sources, dest = args.split()
        assert not any(s.startswith("--") for s in sources), "no COPY --from/--chown here"
        base = context / Path(workdir).relative_to("/") / dest.rstrip("/")
        for src in sources:
            path = ROOT / src
            if path.is_dir():
                shutil.copytree(path, base, ignore=shutil.ignore_patterns("__pycache__"),
                                dirs_exist_ok=True)
            else:
                base.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, base / path.name)
    src_dir = context / Path(workdir).relative_to("/")
    if subprocess.run([PY, "-c", "import build"], capture_output=True).returncode:
        unavailable("build is not installed (hack/setup.sh installs the dev extra)")
    done = subprocess.run([PY, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                           str(tmp_path / "out"), str(src_dir)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = (tmp_path / "out").glob("*.whl")
    missing = sorted(package_files(ROOT) - set(zipfile.ZipFile(wheel).namelist()))
    assert not missing, f"the image would lack {missing}"


HEALTHY_CONF = """
http {
    server {
        listen 8080;
        server_name plain.test;
    }
}
"""
BROKEN_CONF = "http {\n    server {\n        listen 8443 ssl;\n"


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[Prefix, str, subprocess.Popen[bytes]]]:
    """A real `run` (store-only, nothing managed) whose njet.conf is broken from the start:
    its passes fail, so /healthz answers 503 until the file is fixed."""
    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(BROKEN_CONF)
    port = free_tcp_port()
    prefix.write_toml({"acme": {"email": "health@example.test"}, "njet": {"apiAddress": ""},
                       "admin": {"address": f"127.0.0.1:{port}"}})
    log = tmp_path / "controller.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [controller_program(), "-p", f"{prefix.root}/", "-c", str(prefix.toml)],
            stdout=out, stderr=subprocess.STDOUT, cwd="/", env=clean_env())
    try:
        yield prefix, f"http://127.0.0.1:{port}", proc
    finally:
        stop_process(proc)
        print(tail(log))


def status_of(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def run_healthcheck(base: str) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command as written, with this Python for the image's."""
    argv = healthcheck_argv()
    return subprocess.run([PY, *argv[1:]], capture_output=True, text=True, timeout=30,
                          env={"NJCM_HEALTHZ_URL": base + "/healthz"}, cwd="/")


def test_the_dockerfile_healthcheck_follows_a_live_controllers_healthz(
    controller: tuple[Prefix, str, subprocess.Popen[bytes]],
) -> None:
    prefix, base, proc = controller
    assert wait_until(lambda: status_of(base) == 503, 30), "never degraded"
    sick = run_healthcheck(base)
    assert sick.returncode == 1 and "unhealthy: HTTP Error 503" in sick.stderr, sick

    prefix.write_conf(HEALTHY_CONF)
    urllib.request.urlopen(urllib.request.Request(base + "/api/v1/reconcile", method="POST"),
                           timeout=5).close()
    assert wait_until(lambda: status_of(base) == 200, 30), "never healthy again"
    well = run_healthcheck(base)
    assert well.returncode == 0, well

    assert stop_process(proc) == 0
    gone = run_healthcheck(base)
    assert gone.returncode == 1 and "unhealthy:" in gone.stderr, gone


# -- systemd, compose ----------------------------------------------------------------------

UNIT = ROOT / "deploy" / "systemd" / "njet-cert-manager.service"


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_program("systemd-analyze")
    text = UNIT.read_text()
    settings = unit_settings(text)
    exec_start = settings["ExecStart"][0].split()
    assert exec_start[0] == "/usr/local/bin/njet-cert-manager"
    assert exec_start[1:] == ["-p", "/usr/local/njet/", "-c", "conf/cert-manager.toml"]
    for key, value in (("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"),
                       ("PrivateTmp", "yes"), ("Restart", "on-failure"),
                       ("ReadWritePaths", "/usr/local/njet/.lego")):
        assert settings.get(key) == [value], (key, settings.get(key))
    assert "AmbientCapabilities" not in settings, "capabilities only when :80/:443 are ours"
    assert settings["User"] != ["root"]

    program = tmp_path / "njet-cert-manager"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    copy = tmp_path / "njet-cert-manager.service"
    copy.write_text(text.replace("ExecStart=/usr/local/bin/njet-cert-manager",
                                 f"ExecStart={program}", 1))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ours = [ln for ln in done.stderr.splitlines() if copy.name in ln]
    assert not ours, f"systemd-analyze warns about the unit: {ours}"

    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("ExecStart=/usr/local/bin/njet-cert-manager",
                                   f"ExecStart={tmp_path / 'missing'}", 1))
    assert subprocess.run([analyze, "verify", str(broken)], capture_output=True,
                          timeout=60, cwd=tmp_path).returncode != 0, "verify checks nothing?"


def test_compose_runs_the_image_beside_njet_on_one_prefix_and_network() -> None:
    doc = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = doc["services"]
    njet, cm = services["njet"], services["cert-manager"]
    assert njet["image"].startswith("your-registry/"), "a placeholder: the user's NJet image"
    assert cm["build"]["context"] == ".." and cm["build"]["dockerfile"] == "Dockerfile"
    assert cm["network_mode"] == "service:njet"
    assert "njet-prefix:/usr/local/njet" in njet["volumes"]
    assert "njet-prefix:/usr/local/njet" in cm["volumes"]
    assert "njet-prefix" in doc["volumes"]
    assert cm["command"] == ["-p", "/usr/local/njet/", "-c", "conf/cert-manager.toml"]
    assert "user" not in cm, "runs as the image's non-root user unless overridden"
    owner = services["store-owner"]
    assert owner["entrypoint"][:3] == ["install", "-d", "-o"] and "10001" in owner["entrypoint"]
    assert cm["depends_on"]["store-owner"]["condition"] == "service_completed_successfully"
