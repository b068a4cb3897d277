#!/usr/bin/env bash
# Installs everything the demo and the tests need, idempotently:
#   Debian: pebble (ACME test CA), mosquitto + clients (MQTT), lego (benchmark peer), openssl
#   Python: a virtualenv in .venv with the project and its dev extras from PyPI
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v pebble >/dev/null 2>&1 || need_apt+=(pebble)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v lego >/dev/null 2>&1 || need_apt+=(lego)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev,bench]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
echo "setup: ok"
