/**
 * Exhaustion (issue 11): from inside a sandbox, fill its disk, fork without end and allocate
 * without end. Its own limits stop each (ENOSPC, the pids limit, the memory limit), and the
 * host and a neighbour sandbox stay healthy. Jail runtime: the disk limit is the sized layer
 * (`DNAH_JAIL_DISK_MIB`), the others its cgroup.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, statfsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { eventually, startTestStack, type TestStack } from "../e2e/harness.js";

type Exec = { exitCode: number; stdout: string; stderr: string };

describe("exhaustion: disk, pids and memory stop at the sandbox's limits", () => {
  let s: TestStack;
  let hog: string;
  let neighbour: string;
  const held: string[] = [];
  const exec = async (id: string, command: string, timeoutMs = 60_000) => {
    const r = await s.json<Exec>(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      body: JSON.stringify({ command, timeoutMs, user: "root" }),
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  const healthy = async () => {
    assert.equal((await exec(neighbour, "echo fine")).stdout, "fine\n", "the neighbour still runs");
    assert.equal((await fetch(`${s.url}/health`)).status, 200);
  };

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0", DNAH_JAIL_DISK_MIB: "64", DNAH_SANDBOX_PIDS_MAX: "256" });
    const mk = async () =>
      (await s.json<{ sandboxId: string }>("/v1/sandboxes", { method: "POST", body: "{}" })).body.sandboxId;
    hog = await mk();
    neighbour = await mk();
  });
  after(async () => {
    await s?.close();
  });

  test("disk: writing past the sandbox's disk fails with ENOSPC inside it; the host's disk is untouched", async () => {
    const hostFreeBefore = statfsSync(s.stateDir).bavail * statfsSync(s.stateDir).bsize;
    const r = await exec(
      hog,
      "dd if=/dev/zero of=/root/fill bs=1M count=200 2>&1; echo rc=$?; df -m / | tail -1",
    );
    assert.match(r.stdout, /No space left on device/);
    assert.match(r.stdout, /rc=1/);
    const hostFreeAfter = statfsSync(s.stateDir).bavail * statfsSync(s.stateDir).bsize;
    // At most the sandbox's 64 MiB (plus noise) left the host's free space, never the 200 asked.
    assert.ok(
      hostFreeBefore - hostFreeAfter < 100 * 1024 * 1024,
      `host free ${hostFreeBefore} → ${hostFreeAfter}`,
    );
    const m = await s.json<{ diskTotalBytes: string | number; diskUsedBytes: string | number }>(
      `/v1/sandboxes/${hog}/metrics`,
    );
    assert.ok(Number(m.body.diskTotalBytes) <= 64 * 1024 * 1024, `disk total ${m.body.diskTotalBytes}`);
    assert.ok(Number(m.body.diskUsedBytes) > 40 * 1024 * 1024, `disk used ${m.body.diskUsedBytes}`);
    // Freeing space makes it writable again.
    assert.equal(
      (await exec(hog, "rm /root/fill && echo ok > /root/after && cat /root/after")).stdout,
      "ok\n",
    );
    await healthy();
    held.push("disk fill: ENOSPC at the sandbox's 64 MiB, host disk untouched");
  });

  test("pids: a fork bomb stops at the pids limit; the sandbox and its neighbour still run", async () => {
    // dash ends the script at the first fork the kernel refuses ("Cannot fork").
    const r = await exec(
      hog,
      "sh -c 'i=0; while [ $i -lt 400 ]; do sleep 5 & i=$((i+1)); done; echo all-400'",
    );
    assert.doesNotMatch(r.stdout, /all-400/, "400 processes started under a limit of 256");
    assert.match(r.stderr, /fork/i);
    // The limit is the sandbox's cgroup's, set from DNAH_SANDBOX_PIDS_MAX.
    const cg = [
      `/sys/fs/cgroup/pids/${s.cgroupParent}/${hog}`,
      `/sys/fs/cgroup/${s.cgroupParent}/${hog}`,
    ].find((d) => existsSync(`${d}/pids.max`));
    assert.ok(cg, "the sandbox's pids cgroup");
    assert.equal(readFileSync(`${cg}/pids.max`, "utf8").trim(), "256");
    await healthy();
    // Once the sleeps end, it runs as before.
    await eventually(
      async () => (await exec(hog, "echo alive").catch(() => undefined))?.stdout === "alive\n",
      30_000,
    );
    held.push("pids: the fork loop was refused a fork before 400 (limit 256), the sandbox runs on");
  });

  test("memory: allocating past the limit kills the allocation, not the sandbox", async () => {
    // 1 GiB held by `tail` (zeros have no newline: it keeps them all) in a 512 MiB sandbox
    // (the base template's): the kernel's OOM killer ends the allocating process.
    const r = await exec(hog, "head -c 1073741824 /dev/zero | tail > /dev/null; echo rc=$?");
    assert.match(r.stdout, /rc=(137|1)/, r.stdout);
    assert.equal((await exec(hog, "echo alive")).stdout, "alive\n");
    await healthy();
    held.push("memory: the allocating process was killed at 512 MiB, the sandbox runs on");
  });

  test("summary", (t) => {
    t.diagnostic(`hardening | exhaustion | tried 3 | held ${held.length} | failures ${3 - held.length}`);
    for (const h of held) t.diagnostic(`exhaustion | ${h}`);
    assert.equal(held.length, 3);
  });
});
