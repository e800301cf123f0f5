import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type Client, Code } from "@connectrpc/connect";
import { createServiceClient, type Db } from "@dnah/platform";
import { SandboxState, SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { hostLoads } from "../src/db/queries.js";
import { createScheduler, type Scheduler } from "../src/index.js";
import { connectError, logger, migratedDb, signedVmmClient, testConfig } from "./helpers.js";

/**
 * Pause / resume / metrics through the scheduler against real parts: Postgres (own schema)
 * and a real vmm running jail sandboxes, registered with a capacity of two. The vmm runs from
 * its own main.ts in a child process and is reached only through its Connect API, as the
 * scheduler reaches it in production.
 */
const VMM_MAIN = fileURLToPath(new URL("../../vmm/src/main.ts", import.meta.url));
describe("scheduler pause / resume / metrics", () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-sched-pause-${suffix}`;
  const hostId = `pause-${suffix}`;
  let db: Db;
  let drop: () => Promise<void>;
  let scheduler: Scheduler;
  let vmm: ChildProcess | undefined;
  let client: Client<typeof SchedulerService>;
  let vmmClient: Client<typeof VmmService>;
  const made: string[] = [];

  const create = async () => {
    const { sandbox } = await client.createSandbox({ templateId: "base", metadata: { suite: suffix } });
    made.push(sandbox!.sandboxId);
    return sandbox!;
  };
  const row = async (id: string) =>
    (
      await db.query<{ state: string; paused_at: Date | null }>(
        "SELECT state, paused_at FROM sandboxes WHERE id = $1",
        [id],
      )
    ).rows[0];
  const hostPaused = async (id: string) =>
    (await vmmClient.listVms({})).vms.find((v) => v.sandboxId === id)?.paused;

  before(async () => {
    ({ db, drop } = await migratedDb("postgres"));
    scheduler = createScheduler(testConfig(), { db, logger });
    const schedulerUrl = await scheduler.start();
    client = createServiceClient(SchedulerService, schedulerUrl);
    const vmmPort = 20_000 + randomInt(0, 20_000);
    vmm = spawn(process.execPath, ["--import", "tsx", VMM_MAIN], {
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        DNAH_LOG_LEVEL: "warn",
        DNAH_VMM_PORT: String(vmmPort),
        DNAH_STATE_DIR: stateDir,
        DNAH_CGROUP_PARENT: `dnah-sched-pause-${suffix}`,
        DNAH_VMM_CAPACITY: "2",
        DNAH_HOST_ID: hostId,
        DNAH_SCHEDULER_URL: schedulerUrl,
        // Heartbeats would overwrite the host's reported load, which one test zeroes.
        DNAH_HEARTBEAT_INTERVAL_MS: "600000",
        ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
      },
      stdio: ["ignore", "ignore", "inherit"],
    });
    vmmClient = signedVmmClient(db, `http://127.0.0.1:${vmmPort}`);
    // Ready once it answers and has registered with the scheduler (it registers before it
    // logs "vmm listening", after its Connect server is up).
    const deadline = Date.now() + 60_000;
    for (;;) {
      const up = await vmmClient.listVms({}).then(
        () => true,
        () => false,
      );
      const registered =
        up && (await db.query("SELECT 1 FROM hosts WHERE id = $1", [hostId])).rows.length === 1;
      if (registered) break;
      if (vmm.exitCode !== null) throw new Error(`vmm exited with ${vmm.exitCode}`);
      if (Date.now() > deadline) throw new Error("vmm did not start and register within 60 s");
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  after(async () => {
    for (const sandboxId of made) await client?.deleteSandbox({ sandboxId }).catch(() => {});
    if (vmm && vmm.exitCode === null) {
      const exited = new Promise((r) => vmm!.once("exit", r));
      vmm.kill("SIGTERM");
      await exited;
    }
    await scheduler?.close();
    await drop?.();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("pauses and resumes a running sandbox, recording state and paused_at", async () => {
    const sb = await create();
    const id = sb.sandboxId;
    assert.equal(sb.state, SandboxState.RUNNING);

    const paused = (await client.pauseSandbox({ sandboxId: id })).sandbox!;
    assert.equal(paused.state, SandboxState.PAUSED);
    assert.ok(paused.pausedAt !== undefined);
    assert.equal((await row(id))?.state, "paused");
    assert.ok((await row(id))?.paused_at instanceof Date);
    assert.equal(await hostPaused(id), true);
    assert.equal((await client.getSandbox({ sandboxId: id })).sandbox?.state, SandboxState.PAUSED);

    await assert.rejects(
      client.pauseSandbox({ sandboxId: id }),
      connectError(Code.FailedPrecondition, /is paused/),
    );

    const resumed = (await client.resumeSandbox({ sandboxId: id })).sandbox!;
    assert.equal(resumed.state, SandboxState.RUNNING);
    assert.equal(resumed.pausedAt, undefined);
    assert.deepEqual(await row(id), { state: "running", paused_at: null });
    assert.equal(await hostPaused(id), false);
    await assert.rejects(
      client.resumeSandbox({ sandboxId: id }),
      connectError(Code.FailedPrecondition, /is not paused/),
    );
  });

  it("of two concurrent pauses exactly one wins", async () => {
    const id = made[0]!;
    const results = await Promise.allSettled([
      client.pauseSandbox({ sandboxId: id }),
      client.pauseSandbox({ sandboxId: id }),
      client.pauseSandbox({ sandboxId: id }),
    ]);
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
    for (const r of results)
      if (r.status === "rejected") connectError(Code.FailedPrecondition, /is paused/)(r.reason);
    assert.equal((await row(id))?.state, "paused");
    assert.equal(await hostPaused(id), true);
  });

  it("a paused sandbox keeps its host slot", async () => {
    // made[0] is paused; the host has room for two.
    await create();
    // Count from the rows alone: forget what the host last reported.
    await db.query("UPDATE hosts SET running = 0 WHERE id = $1", [hostId]);
    const load = (await hostLoads(db)).hosts.find((h) => h.hostId === hostId);
    assert.equal(load?.running, 2);
    await assert.rejects(client.createSandbox({ templateId: "base" }), connectError(Code.ResourceExhausted));
  });

  it("lists by state; unlistable states are invalid", async () => {
    const [pausedId, runningId] = made;
    const list = async (states: SandboxState[]) =>
      (await client.listSandboxes({ metadata: { suite: suffix }, states })).sandboxes.map((s) => s.sandboxId);
    assert.deepEqual(await list([SandboxState.PAUSED]), [pausedId]);
    assert.deepEqual(await list([SandboxState.RUNNING]), [runningId]);
    assert.deepEqual((await list([])).sort(), [pausedId, runningId].sort());
    assert.deepEqual(
      (await list([SandboxState.RUNNING, SandboxState.PAUSED])).sort(),
      [pausedId, runningId].sort(),
    );
    await assert.rejects(
      client.listSandboxes({ states: [SandboxState.DELETED] }),
      connectError(Code.InvalidArgument, /DELETED cannot be listed/),
    );
  });

  it("metrics come from the host, for running and paused sandboxes", async () => {
    for (const sandboxId of made.slice(0, 2)) {
      const m = (await client.getSandboxMetrics({ sandboxId })).metrics!;
      assert.equal(m.cpuCount, 1);
      assert.equal(m.memTotalBytes, 512n * 1024n * 1024n);
      assert.ok(m.memUsedBytes > 0n);
      assert.ok(m.diskTotalBytes > 0n);
      assert.ok(m.timestamp !== undefined);
    }
    await assert.rejects(
      client.getSandboxMetrics({ sandboxId: "nosuchsandbox" }),
      connectError(Code.NotFound),
    );
  });

  it("a host that fails the pause leaves the row running", async () => {
    const id = made[1]!;
    // The host loses the sandbox behind the scheduler's back.
    await vmmClient.deleteVm({ sandboxId: id });
    await assert.rejects(
      client.pauseSandbox({ sandboxId: id }),
      connectError(Code.Unavailable, /could not pause/),
    );
    assert.deepEqual(await row(id), { state: "running", paused_at: null });
    await client.deleteSandbox({ sandboxId: id });
  });

  it("only running sandboxes pause; unknown ones are not found", async () => {
    await assert.rejects(client.pauseSandbox({ sandboxId: "nosuchsandbox" }), connectError(Code.NotFound));
    await assert.rejects(client.resumeSandbox({ sandboxId: "nosuchsandbox" }), connectError(Code.NotFound));
    await assert.rejects(client.pauseSandbox({ sandboxId: "" }), connectError(Code.InvalidArgument));
    const id = made[0]!;
    await db.query("UPDATE sandboxes SET state = 'stopped', paused_at = NULL WHERE id = $1", [id]);
    try {
      await assert.rejects(
        client.pauseSandbox({ sandboxId: id }),
        connectError(Code.FailedPrecondition, /is not running \(it is stopped\)/),
      );
      await assert.rejects(
        client.getSandboxMetrics({ sandboxId: id }),
        connectError(Code.FailedPrecondition, /is not running/),
      );
    } finally {
      await db.query("UPDATE sandboxes SET state = 'paused', paused_at = now() WHERE id = $1", [id]);
    }
  });

  it("deleting a paused sandbox removes it", async () => {
    const id = made[0]!;
    assert.equal((await row(id))?.state, "paused");
    await client.deleteSandbox({ sandboxId: id }, { timeoutMs: 60_000 });
    assert.equal((await row(id))?.state, "deleted");
    assert.equal(await hostPaused(id), undefined);
  });
});
