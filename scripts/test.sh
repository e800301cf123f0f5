#!/usr/bin/env bash
# `npm test`: the whole suite against the real local Postgres and real jail sandboxes.
# DATABASE_URL defaults to the local server (postgres://postgres@127.0.0.1:5432/test).
#
# Two lanes run at once, each one file at a time: most tests wait on sandboxes, Postgres,
# heartbeats and timers rather than the CPU, so two lanes on a 2-core box take ~60% of one.
# The `vm` lane holds the microVM tests (qemu under TCG burns a core each) and the other
# long ones, so no two microVM tests overlap; the `main` lane holds the rest. The main lane
# prints as it goes, the vm lane's output follows it. Every test keeps to its own schema,
# state folder, cgroup parent, network namespaces and ports, so the lanes share nothing but
# the template cache (whose writers are safe across processes).
#   DNAH_TEST_LANES=1   one lane (everything in order, as before)
#   any arguments       run just those files, in one lane
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
if ! node -e "const c=new (require('pg').Client)(process.env.DATABASE_URL);c.connect().then(()=>c.end()).catch(e=>{console.error(e.message);process.exit(1)})" 2>/dev/null; then
  echo "dnah: cannot reach Postgres at $DATABASE_URL; start it or set DATABASE_URL" >&2
  exit 1
fi
run() { node --import tsx --test --test-concurrency=1 --test-timeout=300000 "$@"; }
if (($# > 0)); then
  run "$@"
  exit
fi
mapfile -t files < <(find packages services guest test -path '*/node_modules' -prune -o -name '*.test.ts' -print 2>/dev/null | sort)
if [[ ${DNAH_TEST_LANES:-2} == 1 ]]; then
  run "${files[@]}"
  exit
fi

# The vm lane: every microVM test, then long jail tests until the lanes are about even
# (measured on a 2-core box; see docs/testing.md).
VM_LANE='(qemu|/runtimes|isolation-qemu|/load|/hosts|/faults|/shutdown|/install|/share\.test|/templates|template-build|template-vm|e2b-templates|/cli\.test|e2e/lifecycle\.test|/llms|/mcp\.test|reaper)'
vm=() main=()
for f in "${files[@]}"; do
  if [[ $f =~ $VM_LANE ]]; then vm+=("$f"); else main+=("$f"); fi
done
out=$(mktemp -d /tmp/dnah-test-XXXXXX)
trap 'rm -rf "$out"' EXIT
start=$SECONDS
run "${vm[@]}" >"$out/vm.tap" 2>&1 &
vm_pid=$!
main_rc=0
run "${main[@]}" 2>&1 | tee "$out/main.tap" || main_rc=$?
echo "# main lane (${#main[@]} files) done after $((SECONDS - start)) s; waiting for the vm lane"
vm_rc=0
wait "$vm_pid" || vm_rc=$?
echo "# ---- vm lane (${#vm[@]} files) ----"
cat "$out/vm.tap"
# Issue 11's table: every hardening area's line (tried / held / failures), from both lanes.
echo "# ---- hardening summary ----"
grep -ho 'hardening | .*' "$out"/*.tap | sort -u | awk -F' [|] ' '{
  rest = $3; for (i = 4; i <= NF; i++) rest = rest " | " $i; printf "# %-34s %s\n", $2, rest }' || echo "# (no hardening lines)"
grep -ho 'load | .*' "$out"/*.tap | sed 's/^/# /' || true
echo "# both lanes done after $((SECONDS - start)) s: main exit $main_rc, vm exit $vm_rc"
((main_rc == 0 && vm_rc == 0))
