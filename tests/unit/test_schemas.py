"""The committed JSON schemas match the models (regenerate with hack/gen-schemas.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schemas_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen_schemas", ROOT / "hack" / "gen-schemas.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, data in mod.schemas().items():
        committed = (ROOT / "crds-like-schemas" / name).read_bytes()
        assert committed == data, f"{name} is stale: run python hack/gen-schemas.py"
