#!/usr/bin/env bash
# Sets up (hack/setup.sh) and runs the whole default test suite: lint, types, tests (unit,
# integration against real Pebble + Mosquitto + the NJet simulator, faults and bench smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check controller tests hack bench
echo "== mypy"; mypy
echo "== pytest"; pytest -q -p no:cacheprovider "$@"
