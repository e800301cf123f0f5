#!/usr/bin/env bash
# Everything a sandbox needs before dnah can start one: host packages, the bundled guest
# agent (with the code-interpreter server), and the templates (built once from Debian's
# archive, cached outside the repo in ${DNAH_CACHE_DIR:-/var/cache/dnah}, keyed by recipe).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
npm run --silent build:guest
node --import tsx packages/cli/src/main.ts template build base >/dev/null
# The code interpreter's template (Jupyter, numpy, pandas, matplotlib): after base, same cache;
# a no-op when its recipe has not changed.
node --import tsx packages/cli/src/main.ts template build code-interpreter >/dev/null
# The microVM image (kernel from Debian's archive, initramfs with the static init, ext4 root
# disk with the agent) for the qemu runtime; cached by its inputs, so a no-op when unchanged.
node --import tsx packages/cli/src/main.ts image build base >/dev/null
