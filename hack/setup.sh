#!/usr/bin/env bash
# Installs everything the demo and the tests need, idempotently:
#   Debian: pebble (ACME test CA), mosquitto + clients (MQTT), lego (benchmark peer), openssl,
#   bind9 + its utils (the authoritative DNS server of the dns-01 tests)
#   and chromium (the status page test drives it through Playwright: no browser download)
#   and systemd (systemd-analyze verifies the unit file of deploy/systemd/)
#   and prometheus, for promtool only (checks deploy/prometheus/): its service is never started
#   and haproxy (the fleet tests put it in front of several nodes; they run their own process)
#   Python: a virtualenv in .venv with the project and its dev, bench and build extras from PyPI
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v pebble >/dev/null 2>&1 || need_apt+=(pebble)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v lego >/dev/null 2>&1 || need_apt+=(lego)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)  # verifies deploy/systemd/
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v named >/dev/null 2>&1 || [ -x /usr/sbin/named ] || need_apt+=(bind9)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
command -v nsupdate >/dev/null 2>&1 || need_apt+=(bind9-utils bind9-dnsutils)
# `ip` adds the loopback aliases the dns-01 tests run several authoritative servers on
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need_apt+=(iproute2)
if ! command -v promtool >/dev/null 2>&1; then
  echo "setup: installing Debian's prometheus for promtool (its service is not started)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then  # invoke-rc.d and deb-systemd-invoke honour it
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null
  [ -z "$made_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d
  # nor at the next boot
  [ ! -d /run/systemd/system ] || $SUDO systemctl disable --quiet prometheus.service || true
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# the fleet tests use the machine's PostgreSQL on 127.0.0.1:5432 (trust auth; the outage tests
# start a cluster of their own with initdb/pg_ctl): start it when it is installed but down
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "setup: starting the machine's PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
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
  .venv/bin/python -m pip install -q -e '.[dev,bench,build]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
echo "setup: ok"
