#!/usr/bin/env bash
# Regenerates proto/gen from proto/ (buf.gen.yaml). With --check, fails when the committed
# generated code differs from what the protos produce.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
buf lint
buf generate
if [[ "${1:-}" == "--check" ]]; then
  if ! git diff --exit-code --stat -- proto/gen || [[ -n "$(git status --porcelain -- proto/gen)" ]]; then
    echo "proto/gen is stale: run 'npm run generate' and commit the result" >&2
    exit 1
  fi
fi
