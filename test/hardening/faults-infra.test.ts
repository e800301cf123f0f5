/**
 * Faults (issue 11), the infrastructure under the services: Postgres crashing and coming
 * back, and the host's disk filling up. Each service runs as its own process (as in
 * faults.test.ts) against a private Postgres cluster this file starts and crashes (the
 * machine's shared one is never touched), with the vmm's state folder on a small loop-mounted
 * ext4 filesystem this file fills.
 *
 * Postgres: calls during the outage fail with a clear 503 `unavailable` (no stack trace, no
 * service dies); seconds after it is back every surface works, no sandbox is lost or
 * duplicated, nothing runs that has no row (no ghost).
 * Disk: creating, snapshotting, uploading to the share and writing a file each fail with a
 * clear "disk full" answer in the surface's shape; no half snapshot is accepted, no partial
 * file is visible; once the filler is gone everything works again.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes, randomInt } from "node:crypto";
import { chownSync, mkdirSync, readdirSync, readFileSync, rmSync, statfsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { eventually, serviceProcesses, waitForHttp } from "../e2e/harness.js";

const run = promisify(execFile);
type Json = Record<string, unknown>;

const PG_BIN = "/usr/lib/postgresql/15/bin";
/** The vmm's state filesystem; each sandbox's writable layer is a sparse image of 64 MiB in it. */
const STATE_DISK_MIB = 256;

/** A throwaway Postgres cluster: initdb as the `postgres` user (initdb refuses root), trust auth. */
class PrivatePostgres {
  readonly data: string;
  readonly port = 40_000 + randomInt(0, 20_000);
  constructor(readonly dir: string) {
    this.data = `${dir}/data`;
  }
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }
  private ctl(...args: string[]) {
    return run("runuser", ["-u", "postgres", "--", `${PG_BIN}/pg_ctl`, "-D", this.data, ...args]);
  }
  async init(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    chownSync(this.dir, Number((await run("id", ["-u", "postgres"])).stdout), 0);
    await run("runuser", [
      "-u",
      "postgres",
      "--",
      `${PG_BIN}/initdb`,
      ...["-D", this.data, "-A", "trust", "-U", "postgres", "--no-sync"],
    ]);
  }
  start() {
    const opts = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
    return this.ctl("-o", opts, "-l", `${this.dir}/log`, "-w", "start");
  }
  /** A crash: every backend killed, no checkpoint; the next start recovers from the WAL. */
  crash() {
    return this.ctl("-m", "immediate", "stop");
  }
  async stop(): Promise<void> {
    await this.ctl("-m", "fast", "stop").catch(() => {});
  }
}

describe("faults: Postgres crashes and restarts, the host's disk fills up", () => {
  const suffix = randomBytes(4).toString("hex");
  const root = `/tmp/dnah-infra-${suffix}`;
  const stateDir = `${root}/state`;
  const pgDb = new PrivatePostgres(`${root}/pg`);
  const key = `dnah_infra_${suffix}_0123456789`;
  const base = 20_000 + randomInt(0, 20_000);
  const ports = { scheduler: base, vmm: base + 1, snapshot: base + 2, gateway: base + 3 };
  const gw = `http://127.0.0.1:${ports.gateway}`;
  const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  const services = serviceProcesses("hard_infra", process.env.DNAH_TEST_LOG ?? "error");
  const procs = services.procs;
  const held: string[] = [];
  const timings: string[] = [];
  /** Sandboxes that existed before a fault and are gone (or not running) after it. */
  let lost = 0;
  let injected = 0;
  let cutSnapshotAt = 0;
  let swept = "";
  const env = (): Record<string, Record<string, string>> => ({
    scheduler: {
      DATABASE_URL: pgDb.url,
      DNAH_SCHEDULER_PORT: String(ports.scheduler),
      DNAH_SNAPSHOT_URL: `http://127.0.0.1:${ports.snapshot}`,
      DNAH_POOL_SIZE: "0",
      DNAH_HOST_DEAD_AFTER_MS: "60000",
      DNAH_VM_BOOT_TIMEOUT_MS: "3000",
      DNAH_SNAPSHOT_CALL_TIMEOUT_MS: "3000",
      DNAH_VMM_CALL_TIMEOUT_MS: "2000",
      // The state filesystem is small on purpose; a full one reports 1 MiB.
      DNAH_MIN_FREE_DISK_MIB: "8",
    },
    snapshot: {
      DATABASE_URL: pgDb.url,
      DNAH_SNAPSHOT_PORT: String(ports.snapshot),
      DNAH_SNAPSHOT_KEYS_DIR: `${root}/keys`,
    },
    vmm: {
      DATABASE_URL: pgDb.url,
      DNAH_VMM_PORT: String(ports.vmm),
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_STATE_DIR: stateDir,
      DNAH_CGROUP_PARENT: `dnah-infra-${suffix}`,
      DNAH_HOST_ID: `infra-${suffix}`,
      DNAH_HEARTBEAT_INTERVAL_MS: "300",
      DNAH_JAIL_DISK_MIB: "64",
      DNAH_SHARE_QUOTA_BYTES: String(64 * 1024 * 1024),
    },
    gateway: {
      DATABASE_URL: pgDb.url,
      DNAH_PORT: String(ports.gateway),
      DNAH_GATEWAY_HOST: "127.0.0.1",
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_SNAPSHOT_URL: `http://127.0.0.1:${ports.snapshot}`,
      DNAH_API_KEY: key,
    },
  });
  const start = (service: string) => services.start(service, env()[service]!);
  const api = (path: string, init: RequestInit = {}) =>
    fetch(gw + path, { ...init, headers: { ...headers, ...(init.headers as Record<string, string>) } });
  const json = async (path: string, init: RequestInit = {}) => {
    const r = await api(path, init);
    const text = await r.text();
    let body: Json;
    try {
      body = (text ? JSON.parse(text) : {}) as Json;
    } catch {
      body = { unparsed: text };
    }
    return { status: r.status, body };
  };
  const create = async (): Promise<string> => {
    const r = await json("/v1/sandboxes", { method: "POST", body: "{}" });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body.sandboxId as string;
  };
  const exec = (id: string, command: string) =>
    json(`/v1/sandboxes/${id}/exec`, { method: "POST", body: JSON.stringify({ command }) });
  const list = async () => ((await json("/v1/sandboxes")).body.sandboxes ?? []) as Json[];
  /** Every service process is still running (none died of the fault). */
  const allAlive = () => {
    for (const [name, p] of procs)
      assert.ok(p.exitCode === null && p.signalCode === null, `${name} died (${p.exitCode ?? p.signalCode})`);
  };
  /** An answer is a clear error in the native shape: {code, message}, no stack trace. */
  const clearError = (r: { status: number; body: Json }, status: number, code: string, what: string) => {
    assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.code, code, `${what}: ${JSON.stringify(r.body)}`);
    assert.equal(typeof r.body.message, "string");
    assert.doesNotMatch(JSON.stringify(r.body), /\n\s+at |node_modules|\.ts:\d+/, `${what}: a stack trace`);
  };
  const jailsOrEmpty = (dir: string): string[] => {
    try {
      return readdirSync(dir);
    } catch {
      return [];
    }
  };
  const filler = `${stateDir}/filler`;
  /** Fills the state filesystem to the last block (fallocate for the bulk, dd for the rest). */
  const fillDisk = async () => {
    const s = statfsSync(stateDir);
    await run("fallocate", ["-l", String(s.bavail * s.bsize), filler]).catch(() => {});
    await run("dd", ["if=/dev/zero", `of=${filler}.tail`, "bs=4k"]).catch(() => {});
    assert.ok(statfsSync(stateDir).bavail < 4, "the state filesystem is full");
  };
  const emptyDisk = async () => {
    rmSync(filler, { force: true });
    rmSync(`${filler}.tail`, { force: true });
  };
  /** Sandbox ids that have a jail folder in the state dir (the host's truth). */
  const jailsOnHost = () => jailsOrEmpty(`${stateDir}/sandboxes`);

  before(async () => {
    const t0 = Date.now();
    await pgDb.init();
    await pgDb.start();
    // The vmm's state on a small filesystem of its own: a sparse ext4 image on a loop device.
    mkdirSync(stateDir, { recursive: true });
    await run("truncate", ["-s", `${STATE_DISK_MIB}M`, `${root}/state.img`]);
    await run("mkfs.ext4", ["-q", "-F", "-m", "0", "-O", "^has_journal", `${root}/state.img`]);
    await run("mount", ["-o", "loop,noatime", `${root}/state.img`, stateDir]);
    timings.push(`postgres up ${Date.now() - t0} ms`);
    start("scheduler");
    start("snapshot");
    await services.listening(`http://127.0.0.1:${ports.scheduler}/`);
    start("vmm");
    start("gateway");
    // A service that dies while starting fails the suite now, not after the wait's timeout.
    const died = new Promise<never>((_, reject) => {
      for (const [name, p] of procs)
        p.once("exit", (code, signal) => reject(new Error(`${name} exited (${code ?? signal})`)));
    });
    died.catch(() => {}); // after start-up, exits are the tests' business (allAlive)
    await Promise.race([waitForHttp(`${gw}/health`), died]);
    // The vmm registers after it listens: the first create needs its host row.
    await eventually(async () => {
      const r = await json("/v1/sandboxes", { method: "POST", body: '{"metadata":{"probe":"1"}}' });
      if (r.status !== 201) return undefined;
      await api(`/v1/sandboxes/${r.body.sandboxId as string}`, { method: "DELETE" });
      return true;
    }, 60_000);
    timings.push(`stack up ${Date.now() - t0} ms`);
  });

  after(async () => {
    // Sandboxes a failed test left (a stopped vmm leaves its jails to the next start).
    if (procs.get("gateway")?.exitCode === null)
      for (const s of await list().catch(() => []))
        await api(`/v1/sandboxes/${s.sandboxId as string}`, { method: "DELETE" }).catch(() => {});
    await services.stop();
    await pgDb.stop();
    // Jail layers the vmm did not get to unmount, then the state filesystem itself.
    const mounts = readFileSync("/proc/self/mounts", "utf8")
      .split("\n")
      .map((l) => l.split(" ")[1] ?? "")
      .filter((m) => m === stateDir || m.startsWith(`${stateDir}/`))
      .sort()
      .reverse();
    for (const m of mounts) await run("umount", ["-l", m]).catch(() => {});
    rmSync(root, { recursive: true, force: true });
  });

  test("Postgres crashes mid-calls: 503s while it is down, no service dies, all works again after", async () => {
    const kept = [await create(), await create()];
    for (const id of kept) assert.equal((await exec(id, "echo up")).body.stdout, "up\n");
    // A share big enough that the snapshot's write takes a while: the scheduler holds the
    // sandbox's row locked (a transaction open on a checked-out connection) meanwhile.
    const blob = await exec(
      kept[1]!,
      "head -c 24M /dev/urandom > /mnt/dnah-share/blob && sha256sum /mnt/dnah-share/blob",
    );
    assert.equal(blob.body.exitCode, 0, JSON.stringify(blob.body));

    // Calls in flight when Postgres dies: two creates (booting), an exec, a list, and a
    // snapshot, killed as soon as its folder appears (the host is still writing it).
    const inFlight = [
      json("/v1/sandboxes", { method: "POST", body: '{"metadata":{"fault":"pg"}}' }),
      json("/v1/sandboxes", { method: "POST", body: '{"metadata":{"fault":"pg"}}' }),
      exec(kept[0]!, "sleep 1; echo slept"),
      json("/v1/sandboxes"),
    ];
    const snapshot = json(`/v1/sandboxes/${kept[1]}/snapshot`, {
      method: "POST",
      body: '{"name":"cut-by-crash"}',
    });
    await eventually(async () => jailsOrEmpty(`${stateDir}/snapshots`).length > 0, 10_000);
    const crashAt = Date.now();
    await pgDb.crash();
    injected++;
    const answers = await Promise.all([snapshot, ...inFlight]);
    const shown = answers.map((a) => `${a.status} ${String(a.body.code ?? "")}`);
    for (const a of answers)
      if (a.status >= 300) clearError(a, 503, "unavailable", "a call cut by the crash");
    assert.equal(
      answers[0]!.status,
      503,
      `the snapshot cut by the crash: ${JSON.stringify(answers[0]!.body)}`,
    );

    // While it is down: every call that needs the database is a clear 503.
    const during = {
      create: await json("/v1/sandboxes", { method: "POST", body: "{}" }),
      list: await json("/v1/sandboxes"),
      get: await json(`/v1/sandboxes/${kept[1]}`),
      snapshot: await json(`/v1/sandboxes/${kept[1]}/snapshot`, { method: "POST", body: "{}" }),
    };
    for (const [what, r] of Object.entries(during))
      clearError(r, 503, "unavailable", `${what} during the outage`);
    // The same in the E2B and Daytona shapes.
    const e2b = await json("/v2/sandboxes");
    assert.equal(e2b.status, 503, JSON.stringify(e2b.body));
    assert.equal(e2b.body.code, 503);
    const daytona = await json("/api/sandbox");
    assert.equal(daytona.status, 503, JSON.stringify(daytona.body));
    assert.equal(daytona.body.code, "SERVICE_UNAVAILABLE");
    for (const r of [e2b, daytona])
      assert.doesNotMatch(JSON.stringify(r.body), /\n\s+at |node_modules|\.ts:\d+/);
    allAlive();

    await new Promise((r) => setTimeout(r, 500));
    await pgDb.start();
    const backAt = Date.now();
    const fresh = await eventually(async () => {
      const r = await json("/v1/sandboxes", { method: "POST", body: "{}" });
      return r.status === 201 ? (r.body.sandboxId as string) : undefined;
    }, 15_000);
    timings.push(
      `postgres down ${backAt - crashAt} ms; first create after it is back ${Date.now() - backAt} ms`,
    );
    allAlive();
    for (const id of [...kept, fresh]) assert.equal((await exec(id, "echo ok")).body.stdout, "ok\n");
    assert.equal((await json("/v2/sandboxes")).status, 200, "E2B list after the outage");
    assert.equal((await json("/api/sandbox")).status, 200, "Daytona list after the outage");

    // No sandbox lost or duplicated; the creates cut by the crash ended running or visibly failed.
    const rows = await list();
    const ids = rows.map((s) => s.sandboxId as string);
    assert.equal(new Set(ids).size, ids.length, "a sandbox listed twice");
    lost += kept.filter((k) => !ids.includes(k)).length;
    for (const id of [...kept, fresh]) assert.ok(ids.includes(id), `sandbox ${id} lost`);
    // No ghost: once the host has reconciled, what runs on it is exactly the running rows.
    await eventually(async () => {
      const running = new Set(
        (await list()).filter((s) => s.state === "running").map((s) => s.sandboxId as string),
      );
      const onHost = jailsOnHost();
      return onHost.length === running.size && onHost.every((id) => running.has(id));
    }, 20_000);
    const cut = (await list()).filter((s) => (s.metadata as Json | undefined)?.fault === "pg");
    for (const s of await list())
      if (s.state === "running")
        assert.equal((await exec(s.sandboxId as string, "echo ok")).body.stdout, "ok\n");

    // The cut snapshot: never ready (not listed), not restorable, its files gone. Its record
    // goes with the pool pass (the last test but one).
    const half = await json("/v1/snapshots/cut-by-crash");
    assert.equal(half.status, 404, `the cut snapshot is not listed: ${JSON.stringify(half.body)}`);
    const restore = await json("/v1/snapshots/cut-by-crash/restore", { method: "POST", body: "{}" });
    assert.ok(
      restore.status === 404 || restore.status === 409,
      `restore of the cut snapshot: ${restore.status}`,
    );
    await eventually(async () => jailsOrEmpty(`${stateDir}/snapshots`).length === 0, 10_000);
    allAlive();
    held.push(
      `postgres crash mid-snapshot + 4 calls: answers ${shown.join(", ")}; outage calls 503; all alive; cut creates ${cut.map((s) => s.state).join("/") || "none kept"}; back in ${Date.now() - backAt} ms`,
    );
    for (const s of await list()) await api(`/v1/sandboxes/${s.sandboxId as string}`, { method: "DELETE" });
    cutSnapshotAt = crashAt;
  });

  test("the host's disk fills up: clear 'disk full' answers, nothing half-made, all works once it has room", async (t) => {
    t.after(emptyDisk); // also when an assertion fails: the next test needs the room
    const id = await create();
    const small = randomBytes(64 * 1024);
    const put = (path: string, body: Uint8Array) =>
      api(`/v1/sandboxes/${id}/share/${path}`, {
        method: "PUT",
        body,
        headers: { "content-type": "application/octet-stream" },
      }).then(async (r) => ({ status: r.status, body: JSON.parse((await r.text()) || "{}") as Json }));
    const writeFile = (path: string, body: Uint8Array) =>
      api(`/v1/sandboxes/${id}/files?path=${encodeURIComponent(path)}`, {
        method: "PUT",
        body,
        headers: { "content-type": "application/octet-stream" },
      }).then(async (r) => ({ status: r.status, body: JSON.parse((await r.text()) || "{}") as Json }));
    assert.equal((await put("before.bin", small)).status, 200);

    await fillDisk();
    injected++;
    const bigBody = randomBytes(4 * 1024 * 1024);
    const answers: Record<string, { status: number; body: Json }> = {};

    // The share: 507 resource_exhausted, nothing of the upload visible.
    answers.share = await put("up/big.bin", bigBody);
    clearError(answers.share, 507, "resource_exhausted", "share upload on a full disk");
    assert.match(String(answers.share.body.message), /disk/, "share: the answer names the disk");
    const ls = await exec(id, "ls -A /mnt/dnah-share/up 2>/dev/null; echo end");
    assert.equal(ls.body.stdout, "end\n", "nothing of the refused upload is visible");

    // The files API (the sandbox's own writable layer, an image file on the full disk).
    answers.file = await writeFile("big.bin", bigBody);
    if (answers.file.status !== 200) {
      // The native files API's answer for a disk the sandbox cannot write to (errors.ts).
      clearError(answers.file, 409, "failed_precondition", "file write on a full disk");
      assert.match(String(answers.file.body.message), /disk space/);
      const seen = await exec(id, "stat -c %s ~/big.bin 2>/dev/null || echo none");
      assert.equal(seen.body.stdout, "none\n", "no partial file is visible");
    } else {
      const sha = await exec(id, "sha256sum ~/big.bin | cut -d' ' -f1");
      assert.equal(
        sha.body.stdout,
        `${createHash("sha256").update(bigBody).digest("hex")}\n`,
        JSON.stringify(sha),
      );
    }

    // A snapshot: refused, nothing of it recorded or left on the host.
    answers.snapshot = await json(`/v1/sandboxes/${id}/snapshot`, {
      method: "POST",
      body: '{"name":"on-full-disk"}',
    });
    clearError(answers.snapshot, 503, "resource_exhausted", "snapshot on a full disk");
    assert.match(String(answers.snapshot.body.message), /disk/, "snapshot: the answer names the disk");
    assert.equal((await json("/v1/snapshots/on-full-disk")).status, 404, "no half snapshot is listed");
    const restore = await json("/v1/snapshots/on-full-disk/restore", { method: "POST", body: "{}" });
    assert.equal(restore.status, 404, `restore of the refused snapshot: ${JSON.stringify(restore.body)}`);
    await eventually(async () => jailsOrEmpty(`${stateDir}/snapshots`).length === 0, 10_000);

    // A new sandbox: refused, no row left running, no jail left on the host.
    const before = new Set(jailsOnHost());
    answers.create = await json("/v1/sandboxes", { method: "POST", body: '{"metadata":{"fault":"disk"}}' });
    clearError(answers.create, 503, "resource_exhausted", "create on a full disk");
    assert.match(String(answers.create.body.message), /disk/, "create: the answer names the disk");
    const made = (await list()).filter((s) => (s.metadata as Json | undefined)?.fault === "disk");
    assert.deepEqual(
      made.filter((s) => s.state === "running"),
      [],
      "a refused create left a running sandbox",
    );
    await eventually(async () => jailsOnHost().every((j) => before.has(j)), 10_000);
    allAlive();

    await emptyDisk();
    const backAt = Date.now();
    if ((await json(`/v1/sandboxes/${id}`)).body.state !== "running") lost++;
    const fresh = await eventually(async () => {
      const r = await json("/v1/sandboxes", { method: "POST", body: "{}" });
      return r.status === 201 ? (r.body.sandboxId as string) : undefined;
    }, 15_000);
    assert.equal((await exec(fresh, "echo ok")).body.stdout, "ok\n");
    const sha = createHash("sha256").update(bigBody).digest("hex");
    assert.equal((await put("up/big.bin", bigBody)).status, 200);
    assert.equal(
      (await exec(id, "sha256sum /mnt/dnah-share/up/big.bin | cut -d' ' -f1")).body.stdout,
      `${sha}\n`,
    );
    assert.equal((await writeFile("big.bin", bigBody)).status, 200);
    const inLayer = await exec(id, "sha256sum ~/big.bin | cut -d' ' -f1");
    assert.equal(inLayer.body.stdout, `${sha}\n`, JSON.stringify(inLayer));
    const snap = await json(`/v1/sandboxes/${id}/snapshot`, {
      method: "POST",
      body: '{"name":"on-full-disk"}',
    });
    assert.equal(snap.status, 201, JSON.stringify(snap.body));
    const restored = await json("/v1/snapshots/on-full-disk/restore", { method: "POST", body: "{}" });
    assert.equal(restored.status, 201, JSON.stringify(restored.body));
    const rid = (restored.body.sandbox as Json).sandboxId as string;
    const inRestored = await exec(rid, "sha256sum ~/big.bin | cut -d' ' -f1");
    assert.equal(inRestored.body.stdout, `${sha}\n`, JSON.stringify(inRestored));
    allAlive();
    held.push(
      `disk full: ${Object.entries(answers)
        .map(([k, a]) => `${k} ${a.status}`)
        .join(
          ", ",
        )} (create: "${String(answers.create.body.message)}"); nothing partial; all works ${Date.now() - backAt} ms after the filler went`,
    );
    for (const x of [id, fresh, rid]) await api(`/v1/sandboxes/${x}`, { method: "DELETE" });
  });

  test("the snapshot the crash cut is swept: its record goes, its name is free again", async () => {
    assert.ok(cutSnapshotAt > 0, "the Postgres test ran");
    const id = await create();
    // The pool pass removes a snapshot left 'creating' past 2 × (snapshot + vmm call deadlines).
    const again = await eventually(async () => {
      const r = await json(`/v1/sandboxes/${id}/snapshot`, {
        method: "POST",
        body: '{"name":"cut-by-crash"}',
      });
      if (r.status === 409) return undefined;
      return r;
    }, 30_000);
    allAlive();
    assert.equal(again.status, 201, JSON.stringify(again.body));
    swept = `the snapshot the crash cut: swept by the pool pass ${Date.now() - cutSnapshotAt} ms after the crash, its name reusable`;
    const restored = await json("/v1/snapshots/cut-by-crash/restore", { method: "POST", body: "{}" });
    assert.equal(restored.status, 201, JSON.stringify(restored.body));
    for (const x of [id, (restored.body.sandbox as Json).sandboxId as string])
      await api(`/v1/sandboxes/${x}`, { method: "DELETE" });
  });

  test("summary", (t) => {
    t.diagnostic(`hardening | faults-infra | injected ${injected} | held ${held.length} | lost ${lost}`);
    for (const h of held) t.diagnostic(`faults-infra | ${h}`);
    if (swept !== "") t.diagnostic(`faults-infra | ${swept}`);
    for (const x of timings) t.diagnostic(`faults-infra | ${x}`);
    assert.equal(lost, 0);
    assert.equal(held.length, injected, "every fault held");
    assert.notEqual(swept, "", "the snapshot the crash cut was swept");
  });
});
