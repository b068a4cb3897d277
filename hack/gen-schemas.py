"""Writes crds-like-schemas/*.json from the pydantic models (run after changing them).

tests/unit/test_schemas.py fails when the committed files are out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.config import Config  # noqa: E402
from controller.status import status_json_schema  # noqa: E402


def schemas() -> dict[str, bytes]:
    opt = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    return {
        "config.schema.json": orjson.dumps(Config.model_json_schema(), option=opt) + b"\n",
        "status.schema.json": orjson.dumps(status_json_schema(), option=opt) + b"\n",
    }


if __name__ == "__main__":
    out = ROOT / "crds-like-schemas"
    out.mkdir(exist_ok=True)
    for name, data in schemas().items():
        (out / name).write_bytes(data)
        print(f"wrote {out / name}")
