#!/usr/bin/env bash
# Builds the single-file executable that NJet launches as a copilot (`[copilot] progName`),
# like NJet's own cert-manager binary: dist/njet-cert-manager for this machine's architecture
# (x86-64 here; arm64 and LoongArch: docs/packaging.md), with PyInstaller one-file.
#
#   bash hack/build-binary.sh                 # -> dist/njet-cert-manager
#   bash hack/build-binary.sh --dist DIR      # -> DIR/njet-cert-manager (the tests build into tmp)
#
# Uses .venv (hack/setup.sh makes it); installs the `build` extra (PyInstaller) into it when
# missing. Scratch files go to build/pyinstaller (or --work DIR). Every controller module is
# bundled: app.py, cli.py and the adapters import some modules only when they are used (the ACME
# client, the challenge solvers, the NJet client, the MQTT listener), which PyInstaller's import
# scan alone would miss; acme, josepy, gmqtt and aiohttp are named too for the same reason.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

dist=dist
work=build/pyinstaller
while [ $# -gt 0 ]; do
  case "$1" in
    --dist) dist=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "build-binary: unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
done

PY=${PYTHON:-$root/.venv/bin/python}
if [ ! -x "$PY" ]; then
  echo "build-binary: $PY not found: run bash hack/setup.sh first" >&2
  exit 1
fi
if ! "$PY" -c 'import PyInstaller' 2>/dev/null; then
  echo "build-binary: installing the build extra (PyInstaller) into .venv"
  "$PY" -m pip install -q -e "$root[build]"
fi

mkdir -p "$work" "$dist"
work=$(cd "$work" && pwd)
dist=$(cd "$dist" && pwd)
entry=$work/njet-cert-manager.py
cat >"$entry" <<'EOF'
# PyInstaller entry point written by hack/build-binary.sh: the console script's main().
import sys

from controller.cli import main

sys.exit(main())
EOF

hidden=()
for mod in acme josepy gmqtt aiohttp; do
  hidden+=(--hidden-import "$mod")
done
# what .venv holds for development only, reached through optional plugin modules (pydantic's
# mypy and hypothesis plugins, ...): never imported by the controller
excluded=()
for mod in hypothesis mypy pytest _pytest setuptools pip tkinter IPython certbot; do
  excluded+=(--exclude-module "$mod")
done

"$PY" -m PyInstaller \
  --noconfirm --clean --log-level WARN \
  --onefile \
  --name njet-cert-manager \
  --distpath "$dist" \
  --workpath "$work" \
  --specpath "$work" \
  --paths "$root" \
  --collect-submodules controller \
  --collect-data controller \
  "${hidden[@]}" \
  "${excluded[@]}" \
  "$entry"

out=$dist/njet-cert-manager
"$out" schema >/dev/null
echo "build-binary: $out ($(uname -m), $(du -h "$out" | cut -f1))"
