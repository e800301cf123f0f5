import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import { rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { DATABASE_URL, eventually, serviceProcesses, waitForHttp } from "./harness.js";

/**
 * Each service from its own main.ts, wired only by URLs — how docker-compose and a
 * multi-host install run them.
 */
describe("services as separate processes", () => {
  const suffix = randomBytes(4).toString("hex");
  const schema = `e2e_procs_${suffix}`;
  const key = `dnah_procs_${suffix}_0123456789`;
  const base = 20_000 + randomInt(0, 20_000);
  const ports = { scheduler: base, vmm: base + 1, snapshot: base + 2, gateway: base + 3 };
  const gw = `http://127.0.0.1:${ports.gateway}`;
  const { start, listening, stop } = serviceProcesses(schema);

  before(async () => {
    start("scheduler", { DNAH_SCHEDULER_PORT: String(ports.scheduler), DNAH_POOL_SIZE: "1" });
    start("snapshot", {
      DNAH_SNAPSHOT_PORT: String(ports.snapshot),
      DNAH_SNAPSHOT_KEYS_DIR: `/tmp/dnah-procs-${suffix}/keys`,
    });
    await listening(`http://127.0.0.1:${ports.scheduler}/`);
    start("vmm", {
      DNAH_VMM_PORT: String(ports.vmm),
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_STATE_DIR: `/tmp/dnah-procs-${suffix}`,
      DNAH_CGROUP_PARENT: `dnah-procs-${suffix}`,
      DNAH_HOST_ID: `procs-${suffix}`,
    });
    start("gateway", {
      DNAH_PORT: String(ports.gateway),
      DNAH_GATEWAY_HOST: "127.0.0.1",
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_API_KEY: key,
    });
    await waitForHttp(`${gw}/health`);
  });

  after(async () => {
    // Stop in dependency order (gateway, vmm, snapshot, scheduler), like a rolling shutdown.
    await stop();
    rmSync(`/tmp/dnah-procs-${suffix}`, { recursive: true, force: true });
    const c = new pg.Client({ connectionString: DATABASE_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  });

  test("create → exec → delete across four processes", async () => {
    const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
    // The vmm registers itself; the first create may race it, so retry until placed.
    const created = await eventually(async () => {
      const r = await fetch(`${gw}/v1/sandboxes`, { method: "POST", headers, body: "{}" });
      return r.status === 201 ? ((await r.json()) as { sandboxId: string }) : undefined;
    }, 60_000);
    const exec = await fetch(`${gw}/v1/sandboxes/${created.sandboxId}/exec`, {
      method: "POST",
      headers,
      body: JSON.stringify({ command: "echo separate; hostname" }),
    });
    assert.deepEqual(await exec.json(), {
      exitCode: 0,
      stdout: `separate\nsandbox-${created.sandboxId.slice(0, 12)}\n`,
      stderr: "",
      truncated: false,
    });
    assert.equal(
      (await fetch(`${gw}/v1/sandboxes/${created.sandboxId}`, { method: "DELETE", headers })).status,
      204,
    );
  });
});
