#!/usr/bin/env bash
# Sets up (hack/setup.sh) and runs the benchmarks against a local Pebble:
#   bash hack/bench.sh [--quick] [--scale N] [--only floor,served,throughput,scale,events] ...
# Results: bench/results/<UTC timestamp>.json and .md (the markdown table is also printed).
# Exit 0 even when a goal is missed; 1 if a bench failed to run; 2 if a prerequisite is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
# Like hack/test.sh: the benches start programs (the NJet simulator, the controller) that must
# find .venv's interpreter and tools first.
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m bench "$@"
