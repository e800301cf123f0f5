#!/usr/bin/env bash
# Everything a sandbox needs before dnah can start one: host packages, the bundled guest
# agent, and the base template (built once from Debian's archive, cached outside the repo
# in ${DNAH_CACHE_DIR:-/var/cache/dnah}, keyed by its recipe).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
npm run --silent build:guest
node --import tsx packages/cli/src/main.ts template build base >/dev/null
