#!/usr/bin/env bash
# `npm test`: the whole suite against the real local Postgres and real jail sandboxes.
# DATABASE_URL defaults to the local server (postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
if ! node -e "const c=new (require('pg').Client)(process.env.DATABASE_URL);c.connect().then(()=>c.end()).catch(e=>{console.error(e.message);process.exit(1)})" 2>/dev/null; then
  echo "dnah: cannot reach Postgres at $DATABASE_URL; start it or set DATABASE_URL" >&2
  exit 1
fi
mapfile -t files < <(find packages services guest test -path '*/node_modules' -prune -o -name '*.test.ts' -print 2>/dev/null | sort)
exec node --import tsx --test --test-concurrency=1 --test-timeout=300000 "${files[@]}"
