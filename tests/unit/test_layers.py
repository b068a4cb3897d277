"""The import direction is part of the design: pure modules import no adapter and no I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "controller"
PURE = [
    "model",
    "reasons",
    "errors",
    "paths",
    "njetconf",
    "desired",
    "certinfo",
    "policy",
    "plan",
    "render",
    "status",
    "fold",
    "njetmatch",
    "events",
    "config",
]
FORBIDDEN = (
    "controller.adapters",
    "controller.observe",
    "controller.execute",
    "controller.reconcile",
    "controller.app",
    "controller.cli",
    "controller.service",
    "asyncio",
    "aiohttp",
    "socket",
    "ssl",
    "gmqtt",
    "acme",
    "requests",
    "subprocess",
)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_adapter_or_io_library(module: str) -> None:
    path = ROOT / f"{module}.py"
    if not path.exists():
        pytest.fail(f"pure module {module}.py is missing")
    bad = sorted(i for i in imports_of(path) if i.startswith(FORBIDDEN))
    assert bad == [], f"{module}.py imports {bad}"


def test_adapters_never_import_the_steps_or_entry_points() -> None:
    steps = (
        "controller.observe",
        "controller.execute",
        "controller.reconcile",
        "controller.app",
        "controller.cli",
        "controller.service",
    )
    for path in sorted((ROOT / "adapters").glob("*.py")):
        bad = sorted(i for i in imports_of(path) if i.startswith(steps))
        assert bad == [], f"adapters/{path.name} imports {bad}"
