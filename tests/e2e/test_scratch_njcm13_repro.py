from pathlib import Path
from typing import Any
import pytest
from tests.e2e.harness import TWO_BLOCKS, Prefix, store_only_toml
from tests.certbuilder import make_cert

pytestmark = pytest.mark.pebble

def test_repro(tmp_path: Path, pebble: Any) -> None:
    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(TWO_BLOCKS)
    prefix.write_toml(store_only_toml(pebble))
    r = prefix.cli("reconcile"); print("RC", r.returncode, r.stderr[-500:])
    crt = prefix.certs / "a.test.crt"
    crt.write_bytes(crt.read_bytes()[:200])
    key = prefix.certs / "b.test.key"
    key.write_bytes(make_cert(["b.test"]).key_pem)
    for cmd in (("diff",), ("reconcile",), ("reconcile",), ("certs","list"), ("diff",)):
        r = prefix.cli(*cmd)
        print("=====", cmd, r.returncode); print(r.stdout[-1500:]); print(r.stderr[-2500:])

def test_long(tmp_path: Path, pebble: Any) -> None:
    prefix = Prefix(tmp_path / "njet")
    long = "a" * 60 + ".long.test"
    prefix.write_conf(TWO_BLOCKS.replace("a.test www.a.test", f"{long} www.a.test"))
    prefix.write_toml(store_only_toml(pebble))
    for cmd in (("diff",), ("reconcile",), ("diff",)):
        r = prefix.cli(*cmd)
        print("=====", cmd, r.returncode); print(r.stdout[-1500:]); print(r.stderr[-2500:])
