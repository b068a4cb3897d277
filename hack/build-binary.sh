#!/usr/bin/env bash
# Builds the single-file executable that NJet launches as a copilot (`[copilot] progName`),
# like NJet's own cert-manager binary: dist/njet-cert-manager for this machine's architecture
# (x86-64 here; arm64 and LoongArch: docs/packaging.md), with PyInstaller one-file.
#
#   bash hack/build-binary.sh                 # -> dist/njet-cert-manager
#   bash hack/build-binary.sh --dist DIR      # -> DIR/njet-cert-manager (the tests build into tmp)
#   bash hack/build-binary.sh --runtime-tmpdir /usr/local/njet/tmp   # unpack there, not in /tmp
#
# Uses .venv (hack/setup.sh makes it); installs the `build` extra (PyInstaller) into it when
# missing. Scratch files go to build/pyinstaller (or --work DIR).
#
# Every controller module is bundled: app.py, cli.py and the adapters import some modules only
# when they are used (the ACME client, the challenge solvers, the NJet client, the MQTT
# listener, the DNS providers), which PyInstaller's import scan alone would miss; acme, josepy,
# gmqtt, aiohttp and dnspython are named for the same reason, and dns-lexicon (its providers
# are imported by name) with its data when .venv has it. publicsuffixlist's data is its packaged
# public suffix list (the rate-limit budget's registered domains; never downloaded).
#
# At every start the one-file program unpacks itself into a fresh folder under $TMPDIR, else
# /tmp (NJet gives it no environment), and removes it at exit; --runtime-tmpdir sets that
# parent folder instead, for hosts whose /tmp is mounted noexec.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

dist=dist
work=build/pyinstaller
runtime_tmpdir=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dist) dist=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --runtime-tmpdir) runtime_tmpdir=(--runtime-tmpdir "$2"); shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
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
for mod in acme josepy gmqtt aiohttp dns; do
  hidden+=(--hidden-import "$mod")
done
for pkg in lexicon tldextract; do
  if "$PY" -c "import $pkg" 2>/dev/null; then
    hidden+=(--collect-all "$pkg")
  fi
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
  --collect-data publicsuffixlist \
  "${hidden[@]}" \
  "${excluded[@]}" \
  ${runtime_tmpdir[@]+"${runtime_tmpdir[@]}"} \
  "$entry"

out=$dist/njet-cert-manager
"$out" schema >/dev/null
echo "build-binary: $out ($(uname -m), $(du -h "$out" | cut -f1))"
