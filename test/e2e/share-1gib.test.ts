import assert from "node:assert/strict";
import { createCipheriv, createHash, randomBytes, randomInt } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { DATABASE_URL, eventually, serviceProcesses } from "./harness.js";

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** `VmRSS` / `VmHWM` of a process, in bytes. */
function memOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(status)?.[1]) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

/** Resets a process's peak RSS to its current RSS (Linux: `5` into clear_refs); false if not allowed. */
function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** `total` pseudo-random bytes (AES-CTR keystream of a seed), 1 MiB at a time: never held whole. */
function seededStream(total: number, seed: Buffer): ReadableStream<Uint8Array> {
  const cipher = createCipheriv("aes-256-ctr", seed, Buffer.alloc(16));
  const zeros = Buffer.alloc(MIB);
  let sent = 0;
  return new ReadableStream({
    pull(c) {
      if (sent >= total) return c.close();
      const n = Math.min(MIB, total - sent);
      c.enqueue(cipher.update(zeros.subarray(0, n)));
      sent += n;
    },
  });
}

/**
 * 1 GiB up and down the share through the gateway, with the gateway and the vmm as their own
 * processes (so their peak RSS means something): checksums match both ways, and neither
 * process's memory grows anywhere near the file's size (everything is streamed).
 */
describe("share: 1 GiB through the gateway, memory flat", () => {
  const suffix = randomBytes(4).toString("hex");
  const schema = `e2e_share1g_${suffix}`;
  const key = `dnah_share1g_${suffix}_0123456789`;
  const base = 20_000 + randomInt(0, 20_000);
  const ports = { scheduler: base, vmm: base + 1, snapshot: base + 2, gateway: base + 3 };
  const stateDir = `/tmp/dnah-share1g-${suffix}`;
  const services = serviceProcesses(schema);
  const gw = `http://127.0.0.1:${ports.gateway}`;
  const auth = { authorization: `Bearer ${key}` };
  let id: string;
  const start = services.start;

  before(async () => {
    start("scheduler", { DNAH_SCHEDULER_PORT: String(ports.scheduler), DNAH_POOL_SIZE: "0" });
    start("snapshot", {
      DNAH_SNAPSHOT_PORT: String(ports.snapshot),
      DNAH_SNAPSHOT_KEYS_DIR: `${stateDir}-keys`,
    });
    await services.listening(`http://127.0.0.1:${ports.scheduler}/`);
    start("vmm", {
      DNAH_VMM_PORT: String(ports.vmm),
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_STATE_DIR: stateDir,
      DNAH_CGROUP_PARENT: `dnah-share1g-${suffix}`,
      DNAH_HOST_ID: `share1g-${suffix}`,
    });
    start("gateway", {
      DNAH_PORT: String(ports.gateway),
      DNAH_GATEWAY_HOST: "127.0.0.1",
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_API_KEY: key,
    });
    await eventually(
      () =>
        fetch(`${gw}/health`).then(
          (r) => r.ok,
          () => false,
        ),
      60_000,
    );
    const r = await eventually(async () => {
      const res = await fetch(`${gw}/v1/sandboxes`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: "{}",
      });
      return res.status === 201 ? ((await res.json()) as { sandboxId: string }) : undefined;
    }, 60_000);
    id = r.sandboxId;
  });

  after(async () => {
    if (id) await fetch(`${gw}/v1/sandboxes/${id}`, { method: "DELETE", headers: auth }).catch(() => {});
    await services.stop();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(`${stateDir}-keys`, { recursive: true, force: true });
    const c = new pg.Client({ connectionString: DATABASE_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  });

  test("1 GiB up and down: sha256 matches both ways, gateway and vmm peak RSS grow < 200 MiB", async () => {
    const pids = { gateway: services.procs.get("gateway")!.pid!, vmm: services.procs.get("vmm")!.pid! };
    const before: Record<string, number> = {};
    for (const [name, pid] of Object.entries(pids)) {
      resetPeak(pid);
      before[name] = memOf(pid).rss;
    }

    // Up: generated as it is sent, hashed as it is generated.
    const seed = randomBytes(32);
    const sent = createHash("sha256");
    const source = seededStream(GIB, seed).pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, c) {
          sent.update(chunk);
          c.enqueue(chunk);
        },
      }),
    );
    // `?digest=sha256`: uploads hash only when asked (page-cache transfer by default).
    const up = await fetch(`${gw}/v1/sandboxes/${id}/share/big/1gib.bin?digest=sha256`, {
      method: "PUT",
      headers: { ...auth, "content-type": "application/octet-stream" },
      body: source,
      duplex: "half",
    } as RequestInit);
    assert.equal(up.status, 200, await up.clone().text());
    const want = sent.digest("hex");
    assert.deepEqual(await up.json(), { path: "/big/1gib.bin", sizeBytes: GIB, sha256: want });

    // Down: hashed as it arrives.
    const down = await fetch(`${gw}/v1/sandboxes/${id}/share/big/1gib.bin`, { headers: auth });
    assert.equal(down.status, 200);
    assert.equal(down.headers.get("content-length"), String(GIB));
    const got = createHash("sha256");
    let bytes = 0;
    for await (const chunk of down.body as unknown as AsyncIterable<Uint8Array>) {
      got.update(chunk);
      bytes += chunk.length;
    }
    assert.equal(bytes, GIB);
    assert.equal(got.digest("hex"), want);

    for (const [name, pid] of Object.entries(pids)) {
      const growth = memOf(pid).hwm - before[name]!;
      assert.ok(
        growth < 200 * MIB,
        `${name}: peak RSS grew ${Math.round(growth / MIB)} MiB during 1 GiB each way`,
      );
      process.stderr.write(`share-1gib: ${name} peak RSS growth ${Math.round(growth / MIB)} MiB\n`);
    }
  });
});
