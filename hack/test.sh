#!/usr/bin/env bash
# Sets up (hack/setup.sh) and runs the default test suite: lint, types, tests (unit, integration
# against real Pebble + Mosquitto + the NJet simulator, a sample of each fault family, bench
# smoke). Extra arguments go to pytest after the defaults, so they win: `-m slow` runs the long
# matrices instead (pyproject.toml's addopts deselect them), `-k kill9` picks tests.
# NJCM_LINT=0 skips ruff and mypy (.ci/run's second pass); NJCM_TEST_WORKERS=0 runs one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# The TCP-mode MQTT tests use a broker on 127.0.0.1:1883 (the machine usually runs one).
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  echo "test: no MQTT broker on 127.0.0.1:1883, starting one"
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' > /tmp/njcm-mosquitto-1883.conf
  "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -d -c /tmp/njcm-mosquitto-1883.conf
  sleep 0.5
fi
if [ "${NJCM_LINT:-1}" != 0 ]; then
  echo "== ruff"; ruff check controller tests hack bench
  echo "== mypy"; mypy
fi
# Most tests wait on subprocesses, handshakes and brokers rather than the CPU: four workers
# keep two cores busy; an idle worker steals queued tests from a busy one (no long tail).
workers=${NJCM_TEST_WORKERS:-4}
dist=(); [ "$workers" = 0 ] || dist=(--dist worksteal)
echo "== pytest"; exec pytest -q -rs -p no:cacheprovider -n "$workers" "${dist[@]}" "$@"
