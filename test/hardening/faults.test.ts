/**
 * Faults (issue 11): each service as its own process, killed with SIGKILL in the middle of
 * work, then started again; and a sandbox's guest agent killed under a running exec.
 * Afterwards every sandbox is in a true state (running, or visibly lost / failed — never a
 * ghost), no partial file is visible, no half snapshot is accepted, and the stack serves again.
 * The reconcilers that repair are the real ones: the vmm's heartbeat (a sandbox its host no
 * longer has — its vmm restarted, or its jail ended with its agent — becomes lost), the pool
 * pass (a start abandoned by a killed scheduler fails and its VM is removed), the share's
 * temp-then-rename (an upload cut off leaves nothing), the snapshot store's `.partial` folder
 * renamed only once whole and swept at the vmm's start.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, randomInt } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { DATABASE_URL, eventually, serviceProcesses, waitForHttp } from "../e2e/harness.js";

type Json = Record<string, unknown>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const list = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir) : []);

describe("faults: services killed mid-work and restarted", () => {
  const suffix = randomBytes(4).toString("hex");
  const schema = `hard_faults_${suffix}`;
  const key = `dnah_faults_${suffix}_0123456789`;
  const base = 20_000 + randomInt(0, 20_000);
  const ports = { scheduler: base, vmm: base + 1, snapshot: base + 2, gateway: base + 3 };
  const stateDir = `/tmp/dnah-faults-${suffix}`;
  const cgroupParent = `dnah-faults-${suffix}`;
  const gw = `http://127.0.0.1:${ports.gateway}`;
  const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  const services = serviceProcesses(schema, "error");
  const procs = services.procs;
  const held: string[] = [];
  /** SIGKILLs sent, and sandboxes that ended visibly `lost` (their host restarted, their VM died). */
  let injected = 0;
  let lostVisibly = 0;
  const env: Record<string, Record<string, string>> = {
    scheduler: {
      DNAH_SCHEDULER_PORT: String(ports.scheduler),
      DNAH_POOL_SIZE: "0",
      DNAH_HOST_DEAD_AFTER_MS: "60000",
      // A start abandoned by a killed scheduler fails after 2 × max(these) (the pool pass).
      DNAH_VM_BOOT_TIMEOUT_MS: "3000",
      DNAH_SNAPSHOT_CALL_TIMEOUT_MS: "3000",
      DNAH_SNAPSHOT_URL: `http://127.0.0.1:${ports.snapshot}`,
    },
    snapshot: { DNAH_SNAPSHOT_PORT: String(ports.snapshot), DNAH_SNAPSHOT_KEYS_DIR: `${stateDir}/keys` },
    vmm: {
      DNAH_VMM_PORT: String(ports.vmm),
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_STATE_DIR: stateDir,
      DNAH_CGROUP_PARENT: cgroupParent,
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

  /** The guest agent of sandbox `id`: the Node process running agent.mjs in its cgroup. */
  const agentOf = (id: string): number | undefined => {
    for (const pid of readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
      try {
        if (
          readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("/opt/dnah/agent/agent.mjs") &&
          readFileSync(`/proc/${pid}/cgroup`, "utf8").includes(`/${cgroupParent}/${id}\n`)
        )
          return Number(pid);
      } catch {
        // ended while we looked
      }
    }
    return undefined;
  };
  /** The sandbox's cgroup folders (v1: one per controller; v2: one). */
  const cgroupsOf = (id: string): string[] =>
    ["", ...readdirSync("/sys/fs/cgroup")]
      .map((c) => join("/sys/fs/cgroup", c, cgroupParent, id))
      .filter((d) => existsSync(d));
  /** What the host still holds of sandbox `id`: its folder, mounts under it, its cgroups. */
  const leftoversOf = (id: string): string[] => {
    const dir = `${stateDir}/sandboxes/${id}`;
    const mounts = readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .map((l) => l.split(" ")[4] ?? "")
      .filter((m) => m.startsWith(`${dir}/`));
    return [...(existsSync(dir) ? [dir] : []), ...mounts, ...cgroupsOf(id)];
  };
  /** True once the runtime has asked the kernel to freeze the sandbox (v1 or v2 freezer). */
  const freezing = (id: string): boolean =>
    cgroupsOf(id).some((d) => {
      try {
        if (existsSync(`${d}/freezer.state`))
          return readFileSync(`${d}/freezer.state`, "utf8").trim() !== "THAWED";
        return readFileSync(`${d}/cgroup.freeze`, "utf8").trim() === "1";
      } catch {
        return false;
      }
    });
  /** Like `eventually`, polling every 2 ms: for kills that must land inside a short call. */
  const soon = async <T>(fn: () => Promise<T | undefined | false>, timeoutMs: number): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await fn();
      if (v) return v;
      if (Date.now() > deadline) throw new Error("condition not met in time");
      await sleep(2);
    }
  };
  /** An answer is a clear error in the native shape: `{code, message}`, no stack trace. */
  const clearError = (r: { status: number; body: Json }, what: string) => {
    const text = JSON.stringify(r.body);
    assert.ok(r.status >= 400 && r.status < 600, `${what}: ${r.status} ${text}`);
    assert.equal(typeof r.body.code, "string", `${what}: ${text}`);
    assert.equal(typeof r.body.message, "string", `${what}: ${text}`);
    assert.doesNotMatch(text, /\bat .*\(.*:\d+:\d+\)|node:internal|\.ts:\d+/, `${what}: a stack trace`);
  };

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
        if (sent === 8) {
          await kill9("gateway");
          injected++;
        }
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
    injected++;
    const answer = await inFlight;
    assert.ok(answer.status >= 500 || answer.body.exitCode !== 0, `exec answered ${JSON.stringify(answer)}`);
    assert.notEqual(answer.body.stdout, "never\n");
    start("vmm");
    // The restarted vmm's heartbeats no longer list it: lost at the second one.
    await eventually(async () => (await stateOf(id)) === "lost", 30_000);
    lostVisibly++;
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
      injected++;
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

  test("guest agent killed mid-exec: the exec fails clearly, the sandbox becomes lost, deleting it leaves nothing", async () => {
    const id = await create();
    const agent = await eventually(async () => agentOf(id), 10_000);
    const inFlight = exec(id, "sleep 30; echo never");
    await sleep(500);
    process.kill(agent, "SIGKILL");
    injected++;
    // The jail's init ends with its agent, taking the sandbox's processes with it; the vmm sees
    // its process exit and stops reporting the sandbox.
    clearError(await inFlight, "the exec cut by the agent's death");
    // Calls until the scheduler hears of it fail at once, clearly (never hang on a dead agent).
    clearError(await exec(id, "echo hi"), "an exec right after");
    await eventually(async () => (await stateOf(id)) === "lost", 30_000);
    lostVisibly++;
    const events = (await json(`/v1/sandboxes/${id}/events`)).body.events as Json[];
    assert.equal(events.at(-1)?.kind, "lost");
    const late = await exec(id, "echo hi");
    clearError(late, "an exec once lost");
    assert.equal(late.status, 409, JSON.stringify(late.body));
    assert.deepEqual(processesOf(id), [], "nothing of it runs on the host");
    const del = await api(`/v1/sandboxes/${id}`, { method: "DELETE" });
    assert.equal(del.status, 204, await del.text());
    assert.deepEqual(leftoversOf(id), [], "no folder, mount or cgroup of it is left");
    held.push(
      "guest agent SIGKILL mid-exec: exec failed cleanly, sandbox lost, its leftovers removed on delete",
    );
  });

  test("vmm killed mid-pause: each pause succeeded or failed clearly; after restart none is a ghost", async () => {
    const ids = await Promise.all([create(), create(), create()]);
    for (const id of ids) {
      const w = await exec(id, `echo ${id} > ~/state && echo ${id} > /mnt/dnah-share/state && echo ok`);
      assert.equal(w.body.stdout, "ok\n", JSON.stringify(w.body));
    }
    // The pauses start a few ms apart; the vmm dies the moment the first sandbox starts to
    // freeze, so one is cut inside the runtime's pause and the others on their way to it.
    const pauses = ids.map((id) =>
      sleep(randomInt(0, 40)).then(() => json(`/v1/sandboxes/${id}/pause`, { method: "POST", body: "{}" })),
    );
    await soon(async () => ids.some(freezing), 20_000);
    await kill9("vmm");
    injected++;
    const answers = await Promise.all(pauses);
    const outcomes = answers.map((a) => {
      if (a.status === 200) {
        assert.equal(a.body.state, "paused", JSON.stringify(a.body));
        return "paused";
      }
      clearError(a, "a pause cut by the kill");
      return `${a.status}`;
    });
    start("vmm");
    // The restarted vmm reclaimed them (a frozen jail too) and no longer reports them: each
    // becomes lost, whether the kill left its row running or paused.
    await eventually(async () => (await Promise.all(ids.map(stateOf))).every((s) => s === "lost"), 30_000);
    lostVisibly += ids.length;
    for (const id of ids) {
      assert.deepEqual(processesOf(id), [], "nothing of it runs on the host");
      assert.deepEqual(leftoversOf(id), [], "no folder, mount or cgroup of it is left");
      const resume = await json(`/v1/sandboxes/${id}/resume`, { method: "POST", body: "{}" });
      clearError(resume, "resume of a sandbox lost mid-pause");
      assert.equal(resume.status, 409, JSON.stringify(resume.body));
    }
    // Pausing works again on the restarted host, and a resumed sandbox has its files.
    const fresh = await create();
    assert.equal((await exec(fresh, "echo kept > ~/kept && echo ok")).body.stdout, "ok\n");
    assert.equal((await json(`/v1/sandboxes/${fresh}/pause`, { method: "POST", body: "{}" })).status, 200);
    assert.equal((await json(`/v1/sandboxes/${fresh}/resume`, { method: "POST", body: "{}" })).status, 200);
    assert.equal((await exec(fresh, "cat ~/kept")).body.stdout, "kept\n");
    held.push(
      `vmm SIGKILL mid-pause: pauses answered ${outcomes.join(", ")}; all ${ids.length} lost after restart, none frozen or left`,
    );
    for (const x of [...ids, fresh]) await api(`/v1/sandboxes/${x}`, { method: "DELETE" });
  });

  test("vmm killed mid-snapshot: the half snapshot is never accepted, its folder goes, nothing runs from it", async () => {
    const snapshots = `${stateDir}/snapshots`;
    const id = await create();
    // 32 MiB on its disk: the host's tar and hashing of it are the window the kill lands in.
    const made = await exec(
      id,
      "head -c 32M /dev/urandom > ~/big && echo keep > /mnt/dnah-share/keep && echo ok",
    );
    assert.equal(made.body.stdout, "ok\n");
    const before = new Set(list(snapshots));
    const pending = json(`/v1/sandboxes/${id}/snapshot`, { method: "POST", body: '{"name":"cut-by-kill"}' });
    const folder = await soon(async () => list(snapshots).find((n) => !before.has(n)), 20_000);
    await kill9("vmm");
    injected++;
    const answer = await pending;
    const snapshotId = folder.replace(/\.partial$/, "");
    const db = new pg.Client({ connectionString: DATABASE_URL });
    await db.connect();
    let outcome: string;
    try {
      const rowOf = async () =>
        (
          await db.query<{ state: string }>(`SELECT state FROM ${schema}.snapshots WHERE id = $1`, [
            snapshotId,
          ])
        ).rows[0]?.state;
      if (answer.status === 201) {
        // The write and signing finished before the kill: a whole snapshot, ready.
        assert.equal(await rowOf(), "ready");
        outcome = "finished before the kill: ready, and it restores whole";
      } else {
        clearError(answer, "a snapshot cut by the kill");
        assert.notEqual(await rowOf(), "ready", "a cut snapshot is never ready");
        // Written as <id>.partial and renamed only once whole: a write cut midway left no
        // folder named by its id. (A kill between the rename and the answer leaves a whole
        // folder with no record: never restorable, only disk.)
        if (folder.endsWith(".partial"))
          assert.ok(
            !list(snapshots).includes(snapshotId),
            `a folder named ${snapshotId} exists after the cut`,
          );
        outcome = `cut (${answer.status}), ${folder.endsWith(".partial") ? "a half .partial folder" : "a whole folder"} left: never ready, not restorable (404)`;
      }
      start("vmm");
      await eventually(async () => (await stateOf(id)) === "lost", 30_000);
      lostVisibly++;
      if (answer.status === 201) {
        // Whole and signed: it restores (on the restarted host) with its files.
        const r = await json(`/v1/snapshots/${snapshotId}/restore`, { method: "POST", body: "{}" });
        assert.equal(r.status, 201, JSON.stringify(r.body));
        const clone = (r.body.sandbox as Json).sandboxId as string;
        assert.equal(
          (await exec(clone, "cat /mnt/dnah-share/keep; stat -c %s ~/big")).body.stdout,
          "keep\n33554432\n",
        );
        await api(`/v1/sandboxes/${clone}`, { method: "DELETE" });
      } else {
        // The restarted vmm removed the half folder; the snapshot is not listed, not restorable.
        if (folder.endsWith(".partial"))
          await eventually(async () => !list(snapshots).includes(folder), 10_000);
        const got = await json(`/v1/snapshots/${snapshotId}`);
        clearError(got, "get of the cut snapshot");
        assert.equal(got.status, 404);
        const restore = await json(`/v1/snapshots/${snapshotId}/restore`, { method: "POST", body: "{}" });
        clearError(restore, "restore of the cut snapshot");
        assert.equal(restore.status, 404, JSON.stringify(restore.body));
        const listed = (await json(`/v1/snapshots?sandboxId=${id}`)).body.snapshots as Json[];
        assert.deepEqual(listed, []);
      }
      const fromIt = await db.query(
        `SELECT id, state FROM ${schema}.sandboxes WHERE source_snapshot_id = $1`,
        [snapshotId],
      );
      assert.ok(
        fromIt.rows.every((r: { state: string }) => r.state === "deleted"),
        `sandboxes from the cut snapshot: ${JSON.stringify(fromIt.rows)}`,
      );
    } finally {
      await db.end();
    }
    // Snapshots work on the restarted host (a cut one's name is free again), written whole.
    const fresh = await create();
    const again = await json(`/v1/sandboxes/${fresh}/snapshot`, {
      method: "POST",
      body: JSON.stringify({ name: answer.status === 201 ? "after-kill" : "cut-by-kill" }),
    });
    assert.equal(again.status, 201, JSON.stringify(again.body));
    const againId = (again.body.snapshot as Json).snapshotId as string;
    assert.ok(existsSync(`${snapshots}/${againId}/MANIFEST`));
    assert.deepEqual(
      list(snapshots).filter((n) => n.endsWith(".partial")),
      [],
    );
    held.push(`vmm SIGKILL mid-snapshot: ${outcome}; no half folder after restart; source lost`);
    await api(`/v1/snapshots/${againId}`, { method: "DELETE" });
    for (const x of [id, fresh]) await api(`/v1/sandboxes/${x}`, { method: "DELETE" });
  });

  test("summary", (t) => {
    // "lost" is what the issue counts: sandboxes gone without a trace (a ghost, a silent
    // "running"). Sandboxes whose host restarted or whose VM died are visibly lost, by design.
    t.diagnostic(
      `hardening | faults | injected ${injected} | held ${held.length} | lost 0 | visibly lost ${lostVisibly}`,
    );
    for (const h of held) t.diagnostic(`faults | ${h}`);
    assert.equal(held.length, 6);
    assert.equal(injected, 6);
  });
});
