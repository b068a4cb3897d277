#!/usr/bin/env bash
# Sets up (hack/setup.sh) and runs the whole default test suite: lint, types, tests (unit,
# integration against real Pebble + Mosquitto + the NJet simulator, faults and bench smoke).
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
echo "== ruff"; ruff check controller tests hack bench
echo "== mypy"; mypy
# Most tests wait on subprocesses, handshakes and brokers rather than the CPU: four workers
# keep two cores busy. NJCM_TEST_WORKERS=0 runs everything in one process.
workers=${NJCM_TEST_WORKERS:-4}
echo "== pytest"; pytest -q -rs -p no:cacheprovider -n "$workers" "$@"
