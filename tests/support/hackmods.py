"""hack/ scripts imported by path (hack/ is not a package), for the tests and bench/.

`load_hack_module("pebble/run.py")` imports hack/pebble/run.py once per process (under the
name `_njet_pebble_run`, the name hack/pebble/run.py itself uses for its siblings).
`PebbleHarness`, `EXAMPLE_EAB_KEYS` and `free_tcp_port` come from hack/pebble/run.py;
`pebble_installed()` says whether Debian's pebble binary is there. Used by
tests/fixtures/pebble.py, tests/fixtures/njetsim.py, tests/faults/ and bench/common.py.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HACK = Path(__file__).resolve().parents[2] / "hack"


def load_hack_module(rel: str) -> ModuleType:
    """hack/<rel> (e.g. "pebble/faultproxy.py") as a module, imported once per process."""
    name = "_njet_" + rel.removesuffix(".py").replace("/", "_").replace("-", "_")
    if name in sys.modules:
        return sys.modules[name]
    path = HACK / rel
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_run = load_hack_module("pebble/run.py")
PebbleHarness: Any = _run.PebbleHarness
EXAMPLE_EAB_KEYS: dict[str, str] = _run.EXAMPLE_EAB_KEYS
free_tcp_port: Callable[..., int] = _run.free_tcp_port


def pebble_installed() -> bool:
    return bool(shutil.which("pebble") or Path("/usr/bin/pebble").exists())
