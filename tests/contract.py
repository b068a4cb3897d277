"""Where the recorded NJet contract lives: `../shared/njet-contract` beside the checkout.

CI clones the repo into some folder with a copy of shared/ beside it; NJET_CONTRACT_DIR
overrides. Tests that need the contract fail (not skip) when it cannot be found.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def contract_dir() -> Path:
    candidates = [
        os.environ.get("NJET_CONTRACT_DIR", ""),
        str(ROOT.parent / "shared" / "njet-contract"),
        "/work/shared/njet-contract",
    ]
    for c in candidates:
        if c and (Path(c) / "README.md").exists():
            return Path(c)
    raise FileNotFoundError(
        "the recorded NJet contract was not found beside the checkout "
        f"({ROOT.parent / 'shared' / 'njet-contract'}); set NJET_CONTRACT_DIR"
    )


CONTRACT = contract_dir()
