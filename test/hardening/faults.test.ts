/**
 * Faults (issue 11): each service as its own process, killed with SIGKILL in the middle of
 * work, then started again. Afterwards every sandbox is in a true state (running, or visibly
 * lost / failed — never a ghost), no partial file is visible, and the stack serves again.
 * The reconcilers that repair are the real ones: the vmm's heartbeat (a sandbox its host no
 * longer has becomes lost), the pool pass (a start abandoned by a killed scheduler fails and
 * its VM is removed), the share's temp-then-rename (an upload cut off leaves nothing).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, randomInt } from "node:crypto";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { DATABASE_URL, eventually, serviceProcesses, waitForHttp } from "../e2e/harness.js";

type Json = Record<string, unknown>;

describe("faults: services killed mid-work and restarted", () => {
  const suffix = randomBytes(4).toString("hex");
  const schema = `hard_faults_${suffix}`;
  const key = `dnah_faults_${suffix}_0123456789`;
  const base = 20_000 + randomInt(0, 20_000);
  const ports = { scheduler: base, vmm: base + 1, snapshot: base + 2, gateway: base + 3 };
  const stateDir = `/tmp/dnah-faults-${suffix}`;
  const gw = `http://127.0.0.1:${ports.gateway}`;
  const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  const services = serviceProcesses(schema, "error");
  const procs = services.procs;
  const held: string[] = [];
  const env: Record<string, Record<string, string>> = {
    scheduler: {
      DNAH_SCHEDULER_PORT: String(ports.scheduler),
      DNAH_POOL_SIZE: "0",
      DNAH_HOST_DEAD_AFTER_MS: "60000",
      // A start abandoned by a killed scheduler fails after 2 × max(these) (the pool pass).
      DNAH_VM_BOOT_TIMEOUT_MS: "3000",
      DNAH_SNAPSHOT_CALL_TIMEOUT_MS: "3000",
    },
    snapshot: { DNAH_SNAPSHOT_PORT: String(ports.snapshot), DNAH_SNAPSHOT_KEYS_DIR: `${stateDir}/keys` },
    vmm: {
      DNAH_VMM_PORT: String(ports.vmm),
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_STATE_DIR: stateDir,
      DNAH_CGROUP_PARENT: `dnah-faults-${suffix}`,
      DNAH_HOST_ID: `faults-${suffix}`,
      DNAH_HEARTBEAT_INTERVAL_MS: "300",
    },
    gateway: {
      DNAH_PORT: String(ports.gateway),
      DNAH_GATEWAY_HOST: "127.0.0.1",
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_SNAPSHOT_URL: `http://127.0.0.1:${ports.snapshot}`,
      DNAH_API_KEY: key,
    },
  };
  const start = (service: string) => services.start(service, env[service]!);
  const kill9 = async (service: string) => {
    const p = procs.get(service)!;
    if (p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once("exit", r));
    p.kill("SIGKILL");
    await gone;
  };
  const api = (path: string, init: RequestInit = {}) =>
    fetch(gw + path, { ...init, headers: { ...headers, ...(init.headers as Record<string, string>) } });
  const json = async (path: string, init: RequestInit = {}) => {
    const r = await api(path, init);
    const text = await r.text();
    return { status: r.status, body: (text ? JSON.parse(text) : {}) as Json };
  };
  const create = async (): Promise<string> =>
    (
      await eventually(async () => {
        const r = await json("/v1/sandboxes", { method: "POST", body: "{}" });
        return r.status === 201 ? r.body : undefined;
      }, 60_000)
    ).sandboxId as string;
  const exec = (id: string, command: string) =>
    json(`/v1/sandboxes/${id}/exec`, { method: "POST", body: JSON.stringify({ command }) });
  const stateOf = async (id: string) => (await json(`/v1/sandboxes/${id}`)).body.state as string;
  /** Sandbox processes of this stack on the host that belong to `id`. */
  const processesOf = (id: string): number[] =>
    readdirSync("/proc")
      .filter((e) => /^\d+$/.test(e))
      .filter((pid) => {
        try {
          const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
          return cmd.includes(stateDir) && cmd.includes(id);
        } catch {
          return false;
        }
      })
      .map(Number);

  before(async () => {
    start("scheduler");
    start("snapshot");
    await services.listening(`http://127.0.0.1:${ports.scheduler}/`);
    start("vmm");
    start("gateway");
    await waitForHttp(`${gw}/health`);
  });

  after(async () => {
    await services.stop();
    rmSync(stateDir, { recursive: true, force: true });
    const c = new pg.Client({ connectionString: DATABASE_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  });

  test("gateway killed mid-upload: no partial file; restarted, the upload goes through", async () => {
    const id = await create();
    const chunk = randomBytes(1024 * 1024);
    let sent = 0;
    const slow = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (sent === 8) await kill9("gateway");
        if (sent >= 64) return c.close();
        sent++;
        c.enqueue(chunk);
        await new Promise((r) => setTimeout(r, 20));
      },
    });
    await assert.rejects(
      fetch(`${gw}/v1/sandboxes/${id}/share/up/big.bin`, {
        method: "PUT",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/octet-stream" },
        body: slow,
        duplex: "half",
      } as RequestInit).then((r) => r.text()),
    );
    start("gateway");
    await waitForHttp(`${gw}/health`);
    assert.equal(await stateOf(id), "running");
    const ls = await exec(id, "ls -A /mnt/dnah-share/up 2>/dev/null; echo end");
    assert.equal(ls.body.stdout, "end\n", "nothing of the cut upload is visible in the sandbox");
    const whole = randomBytes(8 * 1024 * 1024);
    const sha = createHash("sha256").update(whole).digest("hex");
    const put = await api(`/v1/sandboxes/${id}/share/up/big.bin`, {
      method: "PUT",
      body: whole,
      headers: { "content-type": "application/octet-stream", "x-dnah-sha256": sha },
    });
    assert.equal(put.status, 200, await put.text());
    const inGuest = await exec(id, "sha256sum /mnt/dnah-share/up/big.bin | cut -d' ' -f1");
    assert.equal(inGuest.body.stdout, `${sha}\n`);
    held.push("gateway SIGKILL mid-upload: no partial file, sandbox running, retry succeeds");
    await api(`/v1/sandboxes/${id}`, { method: "DELETE" });
  });

  test("vmm killed mid-exec: the call fails, the sandbox becomes lost (not a ghost), new ones run", async () => {
    const id = await create();
    const inFlight = exec(id, "sleep 30; echo never");
    await new Promise((r) => setTimeout(r, 500));
    await kill9("vmm");
    const answer = await inFlight;
    assert.ok(answer.status >= 500 || answer.body.exitCode !== 0, `exec answered ${JSON.stringify(answer)}`);
    assert.notEqual(answer.body.stdout, "never\n");
    start("vmm");
    // The restarted vmm's heartbeats no longer list it: lost at the second one.
    await eventually(async () => (await stateOf(id)) === "lost", 30_000);
    assert.deepEqual(processesOf(id), [], "nothing of it runs on the host");
    const events = (await json(`/v1/sandboxes/${id}/events`)).body.events as Json[];
    assert.equal(events.at(-1)?.kind, "lost");
    const fresh = await create();
    assert.equal((await exec(fresh, "echo ok")).body.stdout, "ok\n");
    held.push("vmm SIGKILL mid-exec: exec failed cleanly, sandbox lost, new sandboxes run");
    for (const x of [id, fresh]) await api(`/v1/sandboxes/${x}`, { method: "DELETE" });
  });

  test("scheduler killed mid-create: no sandbox stays starting, no VM is left without a row", async () => {
    const db = new pg.Client({ connectionString: DATABASE_URL });
    await db.connect();
    try {
      const pending = json("/v1/sandboxes", { method: "POST", body: '{"metadata":{"fault":"mid-create"}}' });
      // Kill once the row exists (it is written before the host is asked to boot).
      await eventually(async () => {
        const r = await db.query(
          `SELECT 1 FROM ${schema}.sandboxes WHERE metadata @> '{"fault":"mid-create"}'`,
        );
        return r.rows.length === 1;
      }, 20_000);
      await kill9("scheduler");
      const answer = await pending;
      assert.ok(answer.status >= 500, `create answered ${answer.status} ${JSON.stringify(answer.body)}`);
      start("scheduler");
      const row = await eventually(async () => {
        const r = await db.query<{ id: string; state: string }>(
          `SELECT id, state FROM ${schema}.sandboxes WHERE metadata @> '{"fault":"mid-create"}'`,
        );
        const s = r.rows[0];
        return s && s.state !== "starting" ? s : undefined;
      }, 30_000);
      // Either it finished booting before the kill (running, usable) or it failed, and then
      // the host removes what it got to (its heartbeat names it for removal).
      if (row.state === "running") assert.equal((await exec(row.id, "echo ok")).body.stdout, "ok\n");
      else {
        assert.equal(row.state, "error");
        await eventually(async () => processesOf(row.id).length === 0, 20_000);
      }
      const fresh = await create();
      assert.equal((await exec(fresh, "echo ok")).body.stdout, "ok\n");
      held.push(`scheduler SIGKILL mid-create: the sandbox ended ${row.state}, nothing orphaned`);
      for (const x of [row.id, fresh]) await api(`/v1/sandboxes/${x}`, { method: "DELETE" });
    } finally {
      await db.end();
    }
  });

  test("summary", (t) => {
    t.diagnostic(`hardening | faults | tried ${held.length} | held ${held.length} | lost 0`);
    for (const h of held) t.diagnostic(`faults | ${h}`);
    assert.equal(held.length, 3);
  });
});
