#!/usr/bin/env bash
# The README's first command: the product's job on a simulated NJet. Sets up (hack/setup.sh;
# NJCM_DEMO_SKIP_SETUP=1 skips it), then hack/demo.py starts a local Pebble ACME CA and the NJet
# simulator serving examples/njet.conf with a bootstrap certificate, shows `diff` and what TLS
# clients receive, adds this controller as NJet's copilot (examples/cert-manager.toml), waits
# until it is in sync, shows the served certificates again, renames a server, reloads NJet and
# shows the new name served; it stops everything it started, also on failure or Ctrl-C.
# Exit 0 on success, 1 naming the failing step, 130 when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${NJCM_DEMO_SKIP_SETUP:-}" != 1 ]; then
  bash hack/setup.sh
fi
export PATH="$PWD/.venv/bin:$PATH"
exec python hack/demo.py "$@"
