"""`diff` never writes (README; issue 13 item 18): the store, the status files and the runtime
file open read-only, so nothing under .lego is created, repaired or rewritten."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from controller.adapters.store.lego import LegoStore
from controller.adapters.store.runtime import RuntimeStore
from controller.adapters.store.statusfile import StatusFiles
from controller.errors import StoreError
from controller.model import CertificateSpec
from controller.paths import StorePaths
from controller.status import CertStatus
from tests.certbuilder import make_cert

CONF = """\
http {
    server { listen 127.0.0.1:8443 ssl; server_name a.test www.a.test;
             ssl_certificate_management acme; }
    server { listen 127.0.0.1:8443 ssl; server_name b.test;
             ssl_certificate_management acme; }
}
"""
TOML = """\
[acme]
keyType = "ec256"
[njet]
apiAddress = ""
"""


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under `root`: kind, content hash, mode, mtime, ctime (a chmod shows too)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *dirnames, *filenames]:
            path = Path(dirpath) / name
            st = os.lstat(path)
            digest = (hashlib.sha256(path.read_bytes()).hexdigest()
                      if stat.S_ISREG(st.st_mode) else None)
            out[str(path.relative_to(root))] = (digest, st.st_mode, st.st_mtime_ns,
                                                st.st_ctime_ns)
    return out


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    prefix = tmp_path / "njet"
    (prefix / "conf").mkdir(parents=True)
    (prefix / "conf" / "njet.conf").write_text(CONF)
    (prefix / "conf" / "cert-manager.toml").write_text(TOML)
    return prefix


def test_diff_through_the_cli_changes_nothing_under_lego(prefix: Path) -> None:
    paths = StorePaths(prefix)
    store = LegoStore(paths)
    store.put("a.test", make_cert(["a.test", "www.a.test"]).issued())
    StatusFiles(paths).save(CertStatus(domain="a.test", attempts=1))
    paths.runtime.mkdir()
    RuntimeStore(paths).path.write_bytes(b"{corrupt")  # load would set it aside
    paths.index.unlink(missing_ok=True)  # diff must not create it
    os.chmod(paths.key("a.test"), 0o644)  # diff warns, never repairs
    os.chmod(paths.certificates, 0o755)
    before = tree(paths.lego)
    run = subprocess.run(
        [sys.executable, "-m", "controller.cli", "-p", str(prefix), "diff"],
        capture_output=True, text=True, timeout=60, cwd="/", check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("NJCM_")},
    )
    assert run.returncode == 2, run.stdout + run.stderr  # b.test is missing: pending
    assert "b.test" in run.stdout
    assert not paths.index.exists(), "diff created .lego/index.json"
    assert tree(paths.lego) == before, "diff changed something under .lego"
    assert str(paths.key("a.test")) in run.stderr and "read-only" in run.stderr


def test_a_read_only_store_refuses_every_write(tmp_path: Path) -> None:
    paths = StorePaths(tmp_path / "njet")
    LegoStore(paths).put("a.test", make_cert(["a.test"]).issued())
    store = LegoStore(paths, read_only=True)
    for write in (lambda: store.put("b.test", make_cert(["b.test"]).issued()),
                  lambda: store.delete("a.test"), lambda: store.quarantine("a.test"),
                  store.recover,
                  lambda: StatusFiles(paths, read_only=True).save(CertStatus(domain="a.test")),
                  lambda: RuntimeStore(paths, read_only=True).replace_all(
                      [CertificateSpec(domain="x.test", names=("x.test",))])):
        with pytest.raises(StoreError, match="read-only"):
            write()
    assert set(store.load_all()[0]) == {"a.test"}
