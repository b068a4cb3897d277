"""docs/ stays true to the code (issue 12 item 7).

- docs/config-reference.md is what hack/gen-config-docs.py prints from the config models.
- docs/operations.md names every Reason, every /healthz status and every exit code.
- The README links every page of docs/, and every relative link in docs/ and the README leads
  to a file that exists.
"""

from __future__ import annotations

import importlib.util
import re
import typing
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from controller.admin_backend import HEALTH_STATUSES
from controller.cli import EXIT_USAGE
from controller.config import Config
from controller.reasons import Reason

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
OPERATIONS = DOCS / "operations.md"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs",
                                                  ROOT / "hack" / "gen-config-docs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_config_reference_is_generated_from_the_models() -> None:
    gen = generator()
    text, _missing = gen.render()
    committed = (DOCS / "config-reference.md").read_text(encoding="utf-8")
    assert committed == text, f"docs/config-reference.md is stale: run {gen.COMMAND}"


def test_the_config_reference_lists_every_section_and_key() -> None:
    text = (DOCS / "config-reference.md").read_text(encoding="utf-8")
    for section, field in Config.model_fields.items():
        if section in ("prefix", "source"):
            continue
        assert f"## `[{section}" in text, section
        tp = field.annotation
        for model in typing.get_args(tp) or (tp,):  # `Section | None` too
            if isinstance(model, type) and issubclass(model, BaseModel):
                for key in model.model_fields:
                    assert f"| `{key}` |" in text, f"{section}.{key}"


@pytest.mark.parametrize("reason", list(Reason), ids=[r.value for r in Reason])
def test_operations_explains_every_reason(reason: Reason) -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    assert re.search(rf"^\| `{reason.value}` \|", text, re.M), (
        f"docs/operations.md has no row for Reason {reason.value} ({reason.name}): add one "
        "under 'Reasons to act' or 'Reasons to wait'")


def test_operations_explains_every_health_status_and_exit_code() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    for status in HEALTH_STATUSES:
        assert re.search(rf"^\| `{status}` \|", text, re.M), status
    for code in (0, 1, 2, EXIT_USAGE, 130):
        assert re.search(rf"^\| {code} \|", text, re.M), code


def test_the_readme_links_every_page_of_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert {"operations.md", "migrating.md", "config-reference.md", "packaging.md"} <= set(pages)
    for page in pages:
        assert f"](docs/{page})" in readme, f"README.md does not link docs/{page}"


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", ["README.md", *sorted(f"docs/{p.name}"
                                                       for p in DOCS.glob("*.md"))])
def test_relative_links_lead_to_files_that_exist(page: str) -> None:
    path = ROOT / page
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file_part = target.split("#", 1)[0]
        assert (path.parent / file_part).exists(), f"{page}: link to {target}: no such file"
