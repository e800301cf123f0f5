/**
 * Graceful shutdown (issue 11): each service runs as its own process and gets SIGTERM while
 * work goes through it. Work in flight finishes (or, past the service's bound, fails with a
 * clear answer), new connections are refused once it drains, the process exits 0 within its
 * bound (DNAH_SHUTDOWN_TIMEOUT_MS), and it leaves nothing behind: a vmm that stops destroys its
 * sandboxes (no jail process, mount, cgroup or folder is left; the scheduler marks them lost
 * when the vmm is back, as after a crash — sandboxes do not survive a vmm restart).
 *
 * The gateway also bounds slow clients (DNAH_HEADERS_TIMEOUT_MS, DNAH_BODY_IDLE_TIMEOUT_MS),
 * here set short: a header dribbled too slowly and a body that stops sending are cut, with
 * no partial file left; a slow but steady body goes through.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawnSync } from "node:child_process";
import { createHash, randomBytes, randomInt } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { createServiceClient } from "@dnah/platform";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import pg from "pg";
import { DATABASE_URL, eventually, sandboxClient, serviceProcesses, waitForHttp } from "../e2e/harness.js";

type Json = Record<string, unknown>;

/**
 * The drain bounds: DNAH_SHUTDOWN_TIMEOUT_MS of the gateway and vmm, the scheduler's default
 * (a create on a loaded box may take seconds); the snapshot service's is fixed (short calls). The vmm's is short because the gateway's
 * kept-alive tunnels hold it to its bound (a tunnel is a byte pipe: idle looks like busy).
 */
const BOUND_MS = { gateway: 3_000, scheduler: 30_000, vmm: 4_000, snapshot: 10_000 } as const;
/** Slack on top of a bound for the process to flush and exit (a loaded 2-core box). */
const EXIT_SLACK_MS = 5_000;
const HEADERS_TIMEOUT_MS = 1_000;
const BODY_IDLE_TIMEOUT_MS = 1_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True once a TCP connect to the port is refused. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(false);
    });
    s.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  ms: number;
}

/** SIGTERMs `p`; resolves with how it exited and how long after the signal. */
function sigterm(p: ChildProcess): Promise<Exit> {
  const t0 = performance.now();
  const exited = new Promise<Exit>((resolve) =>
    p.once("exit", (code, signal) => resolve({ code, signal, ms: performance.now() - t0 })),
  );
  p.kill("SIGTERM");
  return exited;
}

/** Rejects when `p` has not settled within `ms` (a hung drain fails the test, not the suite). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
    }),
  ]);
}

describe("shutdown: SIGTERM drains each service within its bound", () => {
  const suffix = randomBytes(4).toString("hex");
  const schema = `hard_shutdown_${suffix}`;
  const key = `dnah_shutdown_${suffix}_0123456789`;
  const base = 20_000 + randomInt(0, 20_000);
  const ports = { scheduler: base, vmm: base + 1, snapshot: base + 2, gateway: base + 3 };
  const stateDir = `/tmp/dnah-shutdown-${suffix}`;
  const cgroupParent = `dnah-shutdown-${suffix}`;
  const gw = `http://127.0.0.1:${ports.gateway}`;
  const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  const services = serviceProcesses(schema, "error");
  const held: string[] = [];
  const env: Record<string, Record<string, string>> = {
    scheduler: {
      DNAH_SCHEDULER_PORT: String(ports.scheduler),
      DNAH_POOL_SIZE: "0",
    },
    snapshot: {
      DNAH_SNAPSHOT_PORT: String(ports.snapshot),
      DNAH_SNAPSHOT_KEYS_DIR: `${stateDir}/keys`,
    },
    vmm: {
      DNAH_VMM_PORT: String(ports.vmm),
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_STATE_DIR: stateDir,
      DNAH_CGROUP_PARENT: cgroupParent,
      DNAH_HOST_ID: `shutdown-${suffix}`,
      DNAH_HEARTBEAT_INTERVAL_MS: "300",
      DNAH_SHUTDOWN_TIMEOUT_MS: String(BOUND_MS.vmm),
    },
    gateway: {
      DNAH_PORT: String(ports.gateway),
      DNAH_GATEWAY_HOST: "127.0.0.1",
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_SNAPSHOT_URL: `http://127.0.0.1:${ports.snapshot}`,
      DNAH_API_KEY: key,
      DNAH_SHUTDOWN_TIMEOUT_MS: String(BOUND_MS.gateway),
      DNAH_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
      DNAH_BODY_IDLE_TIMEOUT_MS: String(BODY_IDLE_TIMEOUT_MS),
    },
  };
  const start = (service: keyof typeof ports) => services.start(service, env[service]!);
  const stop = async (service: keyof typeof ports): Promise<Exit> => {
    const p = services.procs.get(service)!;
    const exit = sigterm(p);
    return within(exit, BOUND_MS[service] + EXIT_SLACK_MS, `${service} exit after SIGTERM`);
  };
  const api = (path: string, init: RequestInit = {}) =>
    fetch(gw + path, { ...init, headers: { ...headers, ...(init.headers as Record<string, string>) } });
  const json = async (path: string, init: RequestInit = {}) => {
    const r = await api(path, init);
    const text = await r.text();
    return { status: r.status, body: (text ? JSON.parse(text) : {}) as Json };
  };
  const create = (): Promise<string> =>
    eventually(async () => {
      const r = await json("/v1/sandboxes", { method: "POST", body: "{}" });
      return r.status === 201 ? (r.body.sandboxId as string) : undefined;
    }, 20_000);
  const exec = (id: string, command: string) =>
    json(`/v1/sandboxes/${id}/exec`, { method: "POST", body: JSON.stringify({ command }) });
  const stateOf = async (id: string) => (await json(`/v1/sandboxes/${id}`)).body.state as string;
  /** Streams an exec; resolves with every NDJSON line once the stream ends; `started` once it runs. */
  const execStream = (id: string, command: string) => {
    let onStart: () => void = () => {};
    const started = new Promise<void>((r) => {
      onStart = r;
    });
    const done = (async () => {
      const r = await api(`/v1/sandboxes/${id}/exec/stream`, {
        method: "POST",
        body: JSON.stringify({ command }),
      });
      assert.equal(r.status, 200);
      const lines: Json[] = [];
      let buf = "";
      const decoder = new TextDecoder();
      try {
        for await (const chunk of r.body as AsyncIterable<Uint8Array>) {
          buf += decoder.decode(chunk, { stream: true });
          for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
            const line = JSON.parse(buf.slice(0, nl)) as Json;
            buf = buf.slice(nl + 1);
            lines.push(line);
            if (line.type === "start") onStart();
          }
        }
      } catch (err) {
        lines.push({ type: "broken", message: (err as Error).message });
      }
      onStart();
      return lines;
    })();
    return { started, done };
  };
  /** Host processes whose command line (NUL-separated) matches. */
  const processes = (match: (cmdline: string) => boolean) =>
    readdirSync("/proc")
      .filter((e) => /^\d+$/.test(e))
      .filter((pid) => {
        try {
          return match(readFileSync(`/proc/${pid}/cmdline`, "utf8"));
        } catch {
          return false; // gone meanwhile
        }
      });
  /** A sandbox's share folder on the host: `share/` in its folder, or one level down (a sized share). */
  const shareOnHost = (id: string): string => {
    const dir = `${stateDir}/sandboxes/${id}`;
    const found = [`${dir}/share`, ...readdirSync(dir).map((e) => `${dir}/${e}/share`)].find(
      (p) => existsSync(p) && !p.includes("/rootfs/"),
    );
    assert.ok(found, `no share folder under ${dir}`);
    return found;
  };
  /** The host's processes, mounts, cgroups and folders of the stack's sandboxes. */
  const leftovers = (ids: readonly string[]) => {
    const procs = processes((cmd) => cmd.includes(stateDir) && ids.some((id) => cmd.includes(id)));
    const mounts = readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .filter((l) => l.includes(stateDir));
    const list = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);
    const cgroups = list(`/sys/fs/cgroup/${cgroupParent}`).filter((n) => ids.includes(n));
    const folders = list(`${stateDir}/sandboxes`).filter((n) => ids.includes(n));
    return { procs, mounts, cgroups, folders };
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
    // A failed drain must not leave the host mounted: the next test would trip over it.
    for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n").reverse()) {
      const at = line.split(" ")[4];
      if (at?.startsWith(stateDir)) spawnSync("umount", ["-l", at]);
    }
    rmSync(stateDir, { recursive: true, force: true });
    const c = new pg.Client({ connectionString: DATABASE_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  });

  /** A running sandbox the next test uses. */
  let sandbox = "";

  test("snapshot: exits 0 at once, refusing new connections", async (t) => {
    const exit = stop("snapshot");
    await eventually(() => refused(ports.snapshot), 2_000);
    const e = await exit;
    t.diagnostic(
      `snapshot: exit ${e.code} ${e.ms.toFixed(0)} ms after SIGTERM (bound ${BOUND_MS.snapshot} ms)`,
    );
    assert.equal(e.code, 0);
    // Not started again: nothing below needs it (its keys surviving a restart is its own test's).
    held.push("snapshot: exit 0");
  });

  test("vmm: an exec and a create in flight finish; its sandboxes are destroyed, then lost", async (t) => {
    const db = new pg.Client({ connectionString: DATABASE_URL });
    await db.connect();
    try {
      sandbox = await create();
      const inExec = exec(sandbox, "sleep 2; echo done");
      const pending = json("/v1/sandboxes", { method: "POST", body: '{"metadata":{"drain":"vmm"}}' });
      // SIGTERM once both are in the vmm's hands: the command runs, the sandbox is being built.
      const newId = await eventually(async () => {
        const r = await db.query<{ id: string }>(
          `SELECT id FROM ${schema}.sandboxes WHERE metadata @> '{"drain":"vmm"}'`,
        );
        return r.rows[0]?.id;
      }, 20_000);
      await eventually(async () => existsSync(`${stateDir}/sandboxes/${newId}`), 20_000);
      await eventually(
        async () => processes((cmd) => cmd === "/bin/bash\0-l\0-c\0sleep 2; echo done\0").length > 0,
        20_000,
      );
      const exit = stop("vmm");
      await eventually(() => refused(ports.vmm), 2_000);
      const [ran, created] = await Promise.all([inExec, pending]);
      assert.equal(ran.status, 200, JSON.stringify(ran.body));
      assert.equal(ran.body.stdout, "done\n");
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const e = await exit;
      t.diagnostic(`vmm: exit ${e.code} ${e.ms.toFixed(0)} ms after SIGTERM (bound ${BOUND_MS.vmm} ms)`);
      assert.equal(e.code, 0);
      const ids = [sandbox, newId];
      assert.equal(created.body.sandboxId, newId);
      assert.deepEqual(leftovers(ids), { procs: [], mounts: [], cgroups: [], folders: [] });
      start("vmm");
      // Its heartbeats no longer list them: lost at the second one, never running ghosts.
      for (const id of ids) await eventually(async () => (await stateOf(id)) === "lost", 20_000);
      sandbox = await create();
      held.push("vmm: exec + create in flight finished, nothing left on the host, sandboxes lost, exit 0");
    } finally {
      await db.end();
      // The next tests need a host even when this one failed.
      if (services.procs.get("vmm")?.exitCode !== null) start("vmm");
    }
  });

  test("gateway bounds slow clients: a slow header and a stalled body are cut, a steady body passes", async (t) => {
    const share = shareOnHost(sandbox);
    // A header dribbled a byte per 200 ms: 408 and closed within the bound (checked every quarter of it).
    const slowHeader = (async () => {
      const sock = connect(ports.gateway, "127.0.0.1");
      let answer = "";
      let closed = false;
      sock.on("data", (c: Buffer) => {
        answer += c.toString("latin1");
      });
      sock.on("close", () => {
        closed = true;
      });
      sock.on("error", () => undefined);
      const head = `GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ${"s".repeat(40)}`;
      for (let i = 0; i < head.length && !closed; i++) {
        sock.write(head[i]!);
        await sleep(200);
      }
      sock.destroy();
      return { closed, answer };
    })();
    // A share upload that sends 64 KiB of its 1 MiB, then nothing.
    const stalled = (async () => {
      const sock = connect(ports.gateway, "127.0.0.1");
      const closed = new Promise<void>((r) => sock.once("close", () => r()));
      sock.on("error", () => undefined);
      let answer = "";
      sock.on("data", (c: Buffer) => {
        answer += c.toString("latin1");
      });
      sock.write(
        `PUT /v1/sandboxes/${sandbox}/share/stall/part.bin HTTP/1.1\r\nHost: x\r\n` +
          `Authorization: Bearer ${key}\r\nContent-Type: application/octet-stream\r\n` +
          `Content-Length: ${1024 * 1024}\r\n\r\n`,
      );
      sock.write(randomBytes(64 * 1024));
      await within(closed, BODY_IDLE_TIMEOUT_MS + 10_000, "stalled upload cut");
      return answer;
    })();
    // Slow but steady: 9 × 16 KiB, one every 300 ms (2.4 s, more than two idle bounds).
    const chunk = randomBytes(16 * 1024);
    const sha = createHash("sha256")
      .update(Buffer.concat(Array.from({ length: 9 }, () => chunk)))
      .digest("hex");
    let sent = 0;
    const steady = api(`/v1/sandboxes/${sandbox}/share/steady/whole.bin`, {
      method: "PUT",
      body: new ReadableStream<Uint8Array>({
        async pull(c) {
          if (sent >= 9) return c.close();
          if (sent > 0) await sleep(300);
          sent++;
          c.enqueue(chunk);
        },
      }),
      duplex: "half",
      headers: { "content-type": "application/octet-stream", "x-dnah-sha256": sha },
    } as RequestInit).then(async (r) => ({ status: r.status, text: await r.text() }));

    const [h, cutAnswer, ok] = await Promise.all([slowHeader, stalled, steady]);
    t.diagnostic(`slow header: closed ${h.closed}, answer ${JSON.stringify(h.answer.split("\r\n")[0])}`);
    assert.ok(h.closed, "the slow header's connection was not closed");
    assert.match(h.answer, /^HTTP\/1\.1 408 /);
    assert.equal(cutAnswer, "", "a stalled body is cut, not answered");
    assert.equal(ok.status, 200, ok.text);
    assert.equal(
      createHash("sha256")
        .update(readFileSync(`${share}/steady/whole.bin`))
        .digest("hex"),
      sha,
    );
    // Nothing of the cut upload: no file, no temporary file (the vmm discards it).
    await eventually(
      async () => !existsSync(`${share}/stall`) || readdirSync(`${share}/stall`).length === 0,
      5_000,
    );
    held.push("gateway: slow header 408 + closed, stalled body cut (no file), steady body whole");
  });

  test("gateway: a streaming exec and a share upload in flight finish; past the bound, a clear error", async (t) => {
    const short = execStream(sandbox, "sleep 2; echo done");
    const long = execStream(sandbox, "sleep 30; echo never");
    // The same past the bound over Connect: the call ends with its status, not a broken stream.
    let connectStarted: () => void = () => {};
    const connectStart = new Promise<void>((r) => {
      connectStarted = r;
    });
    const connectLong = (async () => {
      try {
        const calls = sandboxClient({ url: gw, key }).execStream({
          sandboxId: sandbox,
          command: "sleep 31; echo never",
        });
        for await (const ev of calls) if (ev.event.case === "pid") connectStarted();
        return "ended without an error";
      } catch (err) {
        connectStarted();
        const e = ConnectError.from(err);
        return `${Code[e.code]}: ${e.rawMessage}`;
      }
    })();
    await Promise.all([short.started, long.started, connectStart]);
    // A share upload sent slowly but steadily: 32 × 32 KiB, one every 50 ms.
    const chunk = randomBytes(32 * 1024);
    const sha = createHash("sha256")
      .update(Buffer.concat(Array.from({ length: 32 }, () => chunk)))
      .digest("hex");
    let sent = 0;
    const upload = api(`/v1/sandboxes/${sandbox}/share/drain/up.bin`, {
      method: "PUT",
      body: new ReadableStream<Uint8Array>({
        async pull(c) {
          if (sent >= 32) return c.close();
          sent++;
          c.enqueue(chunk);
          await sleep(50);
        },
      }),
      duplex: "half",
      headers: { "content-type": "application/octet-stream", "x-dnah-sha256": sha },
    } as RequestInit).then(async (r) => ({ status: r.status, text: await r.text() }));
    await eventually(async () => sent >= 4, 10_000);

    const exit = stop("gateway");
    // Draining: the listener is closed at once.
    await eventually(() => refused(ports.gateway), 2_000);
    const [shortLines, up] = await Promise.all([short.done, upload]);
    assert.ok(
      shortLines.some((l) => l.type === "stdout" && l.data === "done\n"),
      JSON.stringify(shortLines),
    );
    assert.deepEqual(shortLines.at(-1), { type: "exit", exitCode: 0 });
    assert.equal(up.status, 200, up.text);
    // Past the bound the long stream ends with an error line, not a silent cut.
    const longLines = await long.done;
    t.diagnostic(`past the bound, the stream ended with ${JSON.stringify(longLines.at(-1))}`);
    assert.deepEqual(longLines.at(-1), {
      type: "error",
      code: "unavailable",
      message: "the gateway is shutting down; retry",
    });
    assert.equal(await connectLong, "Unavailable: the gateway is shutting down; retry");
    const e = await exit;
    t.diagnostic(
      `gateway: exit ${e.code} ${e.ms.toFixed(0)} ms after SIGTERM (bound ${BOUND_MS.gateway} ms)`,
    );
    assert.equal(e.code, 0);
    // Seen from the host: the upload is whole, and the command cut at the bound was killed.
    const share = shareOnHost(sandbox);
    assert.equal(
      createHash("sha256")
        .update(readFileSync(`${share}/drain/up.bin`))
        .digest("hex"),
      sha,
    );
    // (bash, the command the agent started; its own children are the agent's to reap.)
    const cutCommands = (cmd: string) =>
      cmd === "/bin/bash\0-l\0-c\0sleep 30; echo never\0" ||
      cmd === "/bin/bash\0-l\0-c\0sleep 31; echo never\0";
    assert.deepEqual(processes(cutCommands), [], "a command cut at the bound still runs");
    held.push("gateway: exec + upload in flight finished, past-bound stream got an error line, exit 0");
  });

  test("scheduler: a create in flight completes; the scheduler exits 0", async (t) => {
    const db = new pg.Client({ connectionString: DATABASE_URL });
    await db.connect();
    try {
      // The gateway is gone by now: the scheduler's own API, as the gateway calls it.
      const scheduler = createServiceClient(SchedulerService, `http://127.0.0.1:${ports.scheduler}`);
      const pending = scheduler.createSandbox({ templateId: "base", metadata: { drain: "scheduler" } });
      // SIGTERM once the row exists: the host is being asked to boot it.
      await eventually(async () => {
        const r = await db.query(
          `SELECT 1 FROM ${schema}.sandboxes WHERE metadata @> '{"drain":"scheduler"}'`,
        );
        return r.rows.length === 1;
      }, 20_000);
      const exit = stop("scheduler");
      await eventually(() => refused(ports.scheduler), 2_000);
      const answer = await pending;
      const id = answer.sandbox?.sandboxId ?? "";
      const e = await exit;
      t.diagnostic(
        `scheduler: exit ${e.code} ${e.ms.toFixed(0)} ms after SIGTERM (bound ${BOUND_MS.scheduler} ms)`,
      );
      assert.equal(e.code, 0);
      const row = await db.query<{ state: string }>(`SELECT state FROM ${schema}.sandboxes WHERE id = $1`, [
        id,
      ]);
      assert.equal(row.rows[0]?.state, "running");
      assert.ok(leftovers([id]).procs.length > 0, "the sandbox created during the drain runs on its host");
      held.push("scheduler: create in flight answered and runs, exit 0");
    } finally {
      await db.end();
    }
  });

  test("summary", (t) => {
    t.diagnostic(`hardening | shutdown | tried ${held.length} | held ${held.length} | failures 0`);
    for (const h of held) t.diagnostic(`shutdown | ${h}`);
    assert.equal(held.length, 5);
  });
});
