#!/usr/bin/env bash
# Sets up (hack/setup.sh) and runs the whole default test suite: lint, types, tests (unit,
# integration against real Pebble + Mosquitto + the NJet simulator, faults and bench smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check controller tests hack bench
echo "== mypy"; mypy
# Most tests wait on subprocesses, handshakes and brokers rather than the CPU: four workers
# keep two cores busy. NJCM_TEST_WORKERS=0 runs everything in one process.
workers=${NJCM_TEST_WORKERS:-4}
echo "== pytest"; pytest -q -rs -p no:cacheprovider -n "$workers" "$@"
