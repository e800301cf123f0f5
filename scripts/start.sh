#!/usr/bin/env bash
# `npm start`: prepare the host, then run every dnah service in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare.sh
exec node --import tsx packages/cli/src/main.ts dev
