import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Client, Code } from "@connectrpc/connect";
import { createServiceClient, type Db } from "@dnah/platform";
import { SandboxState, SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { countPool } from "../src/db/queries.js";
import { createScheduler, type Scheduler } from "../src/index.js";
import {
  connectError,
  type DbKind,
  logger,
  migratedDb,
  startVmmTestDouble,
  testConfig,
  type VmmTestDouble,
  waitFor,
} from "./helpers.js";

interface Harness {
  db: Db;
  vmm: VmmTestDouble;
  scheduler: Scheduler;
  client: Client<typeof SchedulerService>;
  stop(): Promise<void>;
}

async function harness(poolSize: number, kind: DbKind = "postgres"): Promise<Harness> {
  const { db, drop } = await migratedDb(kind);
  const vmm = await startVmmTestDouble();
  const scheduler = createScheduler(testConfig({ poolSize }), { db, logger });
  const url = await scheduler.start();
  const client = createServiceClient(SchedulerService, url);
  return {
    db,
    vmm,
    scheduler,
    client,
    async stop() {
      await scheduler.close();
      await vmm.close();
      await drop();
    },
  };
}

const register = (h: Harness, hostId = "host-1", capacity = 10) =>
  h.client.registerHost({ hostId, vmmUrl: h.vmm.url, runtime: "jail", capacitySandboxes: capacity });

const stateOf = async (db: Db, id: string) =>
  (await db.query<{ state: string }>("SELECT state FROM sandboxes WHERE id = $1", [id])).rows[0]?.state;

describe("scheduler service, no warm pool", () => {
  let h: Harness;
  before(async () => {
    h = await harness(0);
  });
  after(() => h.stop());

  it("rejects bad host registrations and heartbeats from unknown hosts", async () => {
    await assert.rejects(
      h.client.registerHost({ hostId: "", vmmUrl: h.vmm.url, runtime: "jail", capacitySandboxes: 1 }),
      connectError(Code.InvalidArgument, /host_id is required/),
    );
    await assert.rejects(
      h.client.registerHost({ hostId: "h", vmmUrl: "localhost:7002", runtime: "jail", capacitySandboxes: 1 }),
      connectError(Code.InvalidArgument, /vmm_url/),
    );
    await assert.rejects(h.client.heartbeat({ hostId: "" }), connectError(Code.InvalidArgument));
    await assert.rejects(
      h.client.heartbeat({ hostId: "ghost" }),
      connectError(Code.NotFound, /not registered/),
    );
  });

  it("is RESOURCE_EXHAUSTED with no host, NOT_FOUND for an unknown template", async () => {
    await assert.rejects(
      h.client.createSandbox({ templateId: "base" }),
      connectError(Code.ResourceExhausted, /no host is registered/),
    );
    await register(h);
    await assert.rejects(
      h.client.createSandbox({ templateId: "nope" }),
      connectError(Code.NotFound, /^template 'nope' not found$/),
    );
    await assert.rejects(h.client.createSandbox({ templateId: "" }), connectError(Code.InvalidArgument));
  });

  it("resolves templates by id or alias", async () => {
    const { template } = await h.client.getTemplate({ templateId: "base" });
    assert.equal(template?.templateId, "base");
    assert.deepEqual(template?.aliases, ["base"]);
    assert.equal(template?.cpuCount, 1);
    assert.equal(template?.memoryMib, 512);
    await h.db.query(
      "INSERT INTO templates (id, aliases, cpu_count, memory_mib) VALUES ('tpl123', '{py}', 2, 2048)",
    );
    assert.equal((await h.client.getTemplate({ templateId: "py" })).template?.templateId, "tpl123");
    await assert.rejects(h.client.getTemplate({ templateId: "nope" }), connectError(Code.NotFound));
  });

  it("creates cold on a miss: CreateVm on the host, then a running record", async () => {
    const before = h.vmm.count("createVm");
    const res = await h.client.createSandbox({
      templateId: "py",
      metadata: { owner: "alice" },
      envVars: { FOO: "bar" },
    });
    assert.equal(res.pooled, false);
    const sb = res.sandbox!;
    assert.match(sb.sandboxId, /^[a-z0-9]{20}$/);
    assert.equal(sb.templateId, "tpl123");
    assert.equal(sb.state, SandboxState.RUNNING);
    assert.equal(sb.hostId, "host-1");
    assert.equal(sb.vmmUrl, h.vmm.url);
    assert.equal(sb.cpuCount, 2);
    assert.equal(sb.memoryMib, 2048);
    assert.equal(sb.runtime, "double");
    assert.deepEqual(sb.metadata, { owner: "alice" });
    assert.deepEqual(sb.envVars, { FOO: "bar" });
    assert.ok(sb.createdAt);
    assert.equal(h.vmm.count("createVm"), before + 1);
    const call = h.vmm.calls.at(-1)!;
    assert.equal(call.method, "createVm");
    assert.equal(call.sandboxId, sb.sandboxId);
    const req = call.req as { templateId: string; envVars: object; cpuCount: number; memoryMib: number };
    assert.equal(req.templateId, "tpl123");
    assert.deepEqual(req.envVars, { FOO: "bar" });
    assert.equal(req.cpuCount, 2);
    assert.equal(req.memoryMib, 2048);
  });

  it("gets and lists users' sandboxes, filtered by metadata, newest first", async () => {
    const a = (await h.client.createSandbox({ templateId: "base", metadata: { team: "x", n: "1" } }))
      .sandbox!;
    const b = (await h.client.createSandbox({ templateId: "base", metadata: { team: "x", n: "2" } }))
      .sandbox!;
    const c = (await h.client.createSandbox({ templateId: "base", metadata: { team: "y" } })).sandbox!;
    assert.equal((await h.client.getSandbox({ sandboxId: a.sandboxId })).sandbox?.sandboxId, a.sandboxId);
    const team = await h.client.listSandboxes({ metadata: { team: "x" } });
    assert.deepEqual(
      team.sandboxes.map((s) => s.sandboxId),
      [b.sandboxId, a.sandboxId],
    );
    const one = await h.client.listSandboxes({ metadata: { team: "x", n: "1" } });
    assert.deepEqual(
      one.sandboxes.map((s) => s.sandboxId),
      [a.sandboxId],
    );
    const all = await h.client.listSandboxes({});
    assert.ok(all.sandboxes.some((s) => s.sandboxId === c.sandboxId));
    await assert.rejects(
      h.client.getSandbox({ sandboxId: "doesnotexist" }),
      connectError(Code.NotFound, /sandbox 'doesnotexist' not found/),
    );
  });

  it("deletes: DeleteVm on the host, then NOT_FOUND", async () => {
    const sb = (await h.client.createSandbox({ templateId: "base" })).sandbox!;
    await h.client.deleteSandbox({ sandboxId: sb.sandboxId });
    assert.ok(h.vmm.calls.some((c) => c.method === "deleteVm" && c.sandboxId === sb.sandboxId));
    assert.ok(!h.vmm.vms.has(sb.sandboxId));
    assert.equal(await stateOf(h.db, sb.sandboxId), "deleted");
    await assert.rejects(h.client.getSandbox({ sandboxId: sb.sandboxId }), connectError(Code.NotFound));
    await assert.rejects(h.client.deleteSandbox({ sandboxId: sb.sandboxId }), connectError(Code.NotFound));
    await assert.rejects(h.client.deleteSandbox({ sandboxId: "doesnotexist" }), connectError(Code.NotFound));
  });

  it("a failed DeleteVm is UNAVAILABLE and a retry finishes it", async () => {
    const sb = (await h.client.createSandbox({ templateId: "base" })).sandbox!;
    h.vmm.failDeletes = 1;
    await assert.rejects(h.client.deleteSandbox({ sandboxId: sb.sandboxId }), connectError(Code.Unavailable));
    assert.equal(await stateOf(h.db, sb.sandboxId), "deleting");
    await assert.rejects(h.client.getSandbox({ sandboxId: sb.sandboxId }), connectError(Code.NotFound));
    await h.client.deleteSandbox({ sandboxId: sb.sandboxId });
    assert.equal(await stateOf(h.db, sb.sandboxId), "deleted");
  });

  it("a failed boot is UNAVAILABLE, leaves an 'error' row, and cleans up on the host", async () => {
    h.vmm.failCreates = 1;
    const deletesBefore = h.vmm.count("deleteVm");
    await assert.rejects(
      h.client.createSandbox({ templateId: "base", metadata: { boot: "fails" } }),
      connectError(Code.Unavailable, /could not start sandbox on host 'host-1'/),
    );
    const { rows } = await h.db.query<{ id: string; state: string; deleted_at: Date | null }>(
      'SELECT id, state, deleted_at FROM sandboxes WHERE metadata @> \'{"boot":"fails"}\'',
    );
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.state, "error");
    assert.ok(rows[0]!.deleted_at);
    await waitFor("cleanup DeleteVm", () => h.vmm.count("deleteVm") > deletesBefore);
    assert.equal((await h.client.listSandboxes({ metadata: { boot: "fails" } })).sandboxes.length, 0);
  });

  it("does not place on a dead host, and deletes on one without asking it", async () => {
    const sb = (await h.client.createSandbox({ templateId: "base" })).sandbox!;
    await h.db.query("UPDATE hosts SET last_heartbeat = now() - interval '1 hour'");
    await assert.rejects(
      h.client.createSandbox({ templateId: "base" }),
      connectError(Code.ResourceExhausted, /no live host/),
    );
    const deletesBefore = h.vmm.count("deleteVm");
    await h.client.deleteSandbox({ sandboxId: sb.sandboxId });
    assert.equal(h.vmm.count("deleteVm"), deletesBefore);
    assert.equal(await stateOf(h.db, sb.sandboxId), "deleted");
    // A heartbeat brings it back.
    await h.client.heartbeat({ hostId: "host-1", runningSandboxes: 0 });
    await h.client.createSandbox({ templateId: "base" });
  });

  it("a live host that reports a sandbox missing at two beats in a row loses it; listed again, it is found", async () => {
    const a = (await h.client.createSandbox({ templateId: "base" })).sandbox!;
    const b = (await h.client.createSandbox({ templateId: "base" })).sandbox!;
    const beat = (ids: string[]) =>
      h.client.heartbeat({
        hostId: "host-1",
        runningSandboxes: ids.length,
        reportsSandboxes: true,
        sandboxIds: ids,
      });
    // One missed beat is not enough (a list assembled just before a create finished).
    await beat([b.sandboxId]);
    assert.equal(await stateOf(h.db, a.sandboxId), "running");
    // Listed again: the mark goes, so a later single miss does not lose it either.
    await beat([a.sandboxId, b.sandboxId]);
    await beat([b.sandboxId]);
    assert.equal(await stateOf(h.db, a.sandboxId), "running");
    await beat([b.sandboxId]);
    assert.equal(await stateOf(h.db, a.sandboxId), "lost");
    assert.equal(await stateOf(h.db, b.sandboxId), "running");
    const { events } = await h.client.listSandboxEvents({ sandboxId: a.sandboxId });
    assert.match(events.at(-1)!.detail, /reported it missing twice/);
    assert.equal(events.at(-1)!.kind, "lost");
    // The host has it after all (a stalled report): it runs again.
    await beat([a.sandboxId, b.sandboxId]);
    assert.equal(await stateOf(h.db, a.sandboxId), "running");
    for (const x of [a, b]) await h.client.deleteSandbox({ sandboxId: x.sandboxId });
  });

  it("respects host capacity", async () => {
    await register(h, "host-1", 0);
    await assert.rejects(
      h.client.createSandbox({ templateId: "base" }),
      connectError(Code.ResourceExhausted, /full/),
    );
    await register(h, "host-1", 100);
  });
});

for (const kind of ["postgres", "pglite"] as DbKind[]) {
  describe(`scheduler service, warm pool of 2 (${kind})`, () => {
    let h: Harness;
    before(async () => {
      h = await harness(2, kind);
    });
    after(() => h.stop());

    const pool = () => countPool(h.db, "base", 15_000);
    const runningPool = async () =>
      (
        await h.db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM sandboxes WHERE pooled AND state = 'running' AND template_id = 'base'",
        )
      ).rows[0]!.n;

    it("fills the pool to its target once a host registers, and no further", async () => {
      assert.equal((await h.client.getTemplate({ templateId: "base" })).template?.poolTargetSize, 2);
      await register(h);
      await waitFor("pool of 2", async () => (await runningPool()) === 2);
      // Several more refill passes must not boot more.
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(h.vmm.count("createVm"), 2);
      assert.equal(await pool(), 2);
      assert.equal((await h.client.listSandboxes({})).sandboxes.length, 0);
    });

    it("hands out a warm sandbox, configures its env, and refills", async () => {
      const res = await h.client.createSandbox({
        templateId: "base",
        metadata: { who: "bob" },
        envVars: { K: "v" },
      });
      assert.equal(res.pooled, true);
      const sb = res.sandbox!;
      assert.equal(sb.state, SandboxState.RUNNING);
      assert.deepEqual(sb.metadata, { who: "bob" });
      assert.deepEqual(sb.envVars, { K: "v" });
      assert.equal(sb.vmmUrl, h.vmm.url);
      const configure = h.vmm.calls.find((c) => c.method === "configureVm");
      assert.ok(configure, "ConfigureVm was called");
      assert.equal(configure.sandboxId, sb.sandboxId);
      assert.deepEqual((configure.req as { envVars: object }).envVars, { K: "v" });
      // It was booted by the pool, not on this call.
      assert.ok(h.vmm.calls.some((c) => c.method === "createVm" && c.sandboxId === sb.sandboxId));
      await waitFor("refill to 2", async () => (await runningPool()) === 2);
      assert.equal(h.vmm.count("createVm"), 3);
      assert.deepEqual(
        (await h.client.listSandboxes({})).sandboxes.map((s) => s.sandboxId),
        [sb.sandboxId],
      );
    });

    it("a claim without env vars does not call ConfigureVm", async () => {
      const configures = h.vmm.count("configureVm");
      assert.equal((await h.client.createSandbox({ templateId: "base" })).pooled, true);
      assert.equal(h.vmm.count("configureVm"), configures);
      await waitFor("refill to 2", async () => (await runningPool()) === 2);
    });

    it("keeps refilling after failed boots", async () => {
      h.vmm.failCreates = 1;
      await h.client.createSandbox({ templateId: "base" });
      // One boot fails, backs off (1 s), then the pool is full again.
      await waitFor(
        "refill after a failure",
        async () => (await runningPool()) === 2 && h.vmm.failCreates === 0,
      );
      assert.equal(await pool(), 2);
    });

    it("drainPool deletes the warm sandboxes and leaves users' ones", async () => {
      const users = (await h.client.listSandboxes({})).sandboxes.length;
      const warm = (
        await h.db.query<{ id: string }>("SELECT id FROM sandboxes WHERE pooled AND state = 'running'")
      ).rows.map((r) => r.id);
      assert.equal(await h.scheduler.drainPool(), 2);
      for (const id of warm) {
        assert.ok(h.vmm.calls.some((c) => c.method === "deleteVm" && c.sandboxId === id));
        assert.equal(await stateOf(h.db, id), "deleted");
      }
      assert.equal(await runningPool(), 0);
      assert.equal((await h.client.listSandboxes({})).sandboxes.length, users);
      // With the pool drained (and the refiller stopped), creates go cold.
      assert.equal((await h.client.createSandbox({ templateId: "base" })).pooled, false);
    });
  });
}
