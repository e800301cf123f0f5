import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { DATABASE_URL, eventually, waitForHttp } from "./harness.js";

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
  const procs: ChildProcess[] = [];
  const gw = `http://127.0.0.1:${ports.gateway}`;
  const common = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    DATABASE_URL,
    DNAH_DB_SCHEMA: schema,
    DNAH_LOG_LEVEL: "warn",
    ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
  };
  const start = (service: string, env: Record<string, string>) => {
    const p = spawn(process.execPath, ["--import", "tsx", `services/${service}/src/main.ts`], {
      env: { ...common, ...env },
      stdio: ["ignore", "ignore", "inherit"],
    });
    procs.push(p);
  };

  before(async () => {
    start("scheduler", { DNAH_SCHEDULER_PORT: String(ports.scheduler), DNAH_POOL_SIZE: "1" });
    start("snapshot", {
      DNAH_SNAPSHOT_PORT: String(ports.snapshot),
      DNAH_SNAPSHOT_KEYS_DIR: `/tmp/dnah-procs-${suffix}/keys`,
    });
    await eventually(() =>
      fetch(`http://127.0.0.1:${ports.scheduler}/`).then(
        () => true,
        () => false,
      ),
    );
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
    for (const p of [...procs].reverse()) {
      await new Promise<void>((resolve) => {
        if (p.exitCode !== null) return resolve();
        p.once("exit", () => resolve());
        p.kill("SIGTERM");
      });
    }
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
