#!/usr/bin/env bash
# The main job on the local embedded default: starts a local Pebble ACME CA, reconciles
# examples/njet.conf into ./demo-prefix in store-only mode, shows what was issued and that a
# second run does nothing, then stops Pebble.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
PREFIX=$PWD/demo-prefix
STATE=$PWD/.run/pebble
mkdir -p "$PREFIX/conf" "$STATE"
cp examples/njet.conf "$PREFIX/conf/njet.conf"

echo "== starting Pebble"
python hack/pebble/run.py start --state-dir "$STATE" --validity 7776000  # 90-day certs
trap 'python hack/pebble/run.py stop --state-dir "$STATE" >/dev/null 2>&1 || true' EXIT
python - "$STATE/state.json" examples/cert-manager.toml "$PREFIX/conf/cert-manager.toml" <<'PY'
import json, sys
state = json.load(open(sys.argv[1]))
text = open(sys.argv[2]).read()
for key, value in {"@DIRECTORY@": state["directory_url"], "@CABUNDLE@": state["ca_bundle"],
                   "@HTTPPORT@": str(state["http_port"])}.items():
    text = text.replace(key, value)
open(sys.argv[3], "w").write(text)
PY

echo "== diff before"
njet-cert-manager -p "$PREFIX" -c conf/cert-manager.toml diff || true
echo "== reconcile"
njet-cert-manager -p "$PREFIX" -c conf/cert-manager.toml reconcile
echo "== issued certificates"
njet-cert-manager -p "$PREFIX" -c conf/cert-manager.toml certs list -o wide
for crt in "$PREFIX"/.lego/certificates/*.crt; do
  case "$crt" in *.issuer.crt) continue;; esac
  echo "-- $crt"
  openssl x509 -in "$crt" -noout -subject -issuer -enddate -ext subjectAltName 2>/dev/null \
    | sed 's/^/   /'
done
echo "== diff after (exit 0 = in sync)"
njet-cert-manager -p "$PREFIX" -c conf/cert-manager.toml diff
