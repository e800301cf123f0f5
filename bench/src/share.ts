/**
 * `npm run bench -- --share`: bulk transfer on a sandbox's share through the gateway of a dev
 * stack (jail runtime), MB/s for 1 MiB, 64 MiB and 1 GiB files, each beside a bare `cp` of the
 * same file on the same disk measured in the same run (the floor):
 *
 *   upload   (`PUT /v1/sandboxes/{id}/share/<path>`, the file streamed from disk)  vs  cp file → share
 *   download (`GET …`, streamed to a file on the same disk)                         vs  cp share → file
 *
 * The client is `curl` (its own process); the gateway and the vmm run in the bench's process,
 * as `startDevStack` runs them. Page cache warm for all (each source file is read once before).
 * Beside them, the JS HTTP ceilings (`share-floor.ts`): the same curl transfers through one bare
 * `node:http` server writing/reading a file, and through a bare proxy in front of it (two hops,
 * as gateway → vmm). Runs per size: BENCH_SHARE_N (default 5; 3 for 1 GiB). Everything it makes
 * is removed, also on SIGINT/SIGTERM.
 */
import { spawn } from "node:child_process";
import { createCipheriv, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { startDevStack } from "@dnah/cli";
import { silentLogger } from "@dnah/platform";
import { DEFAULT_CACHE_DIR } from "@dnah/vmm";
import pg from "pg";
import { cleanUpOnInterrupt } from "./interrupt.js";
import { startFloorProxy, startFloorServer } from "./share-floor.js";
import { percentile } from "./stats.js";

const MIB = 1024 * 1024;

/** Writes `size` pseudo-random bytes to `path`, 1 MiB at a time. */
async function makeFile(path: string, size: number): Promise<void> {
  const cipher = createCipheriv("aes-256-ctr", randomBytes(32), Buffer.alloc(16));
  const zeros = Buffer.alloc(MIB);
  let left = size;
  const src = Readable.from(
    (function* () {
      while (left > 0) {
        const n = Math.min(MIB, left);
        left -= n;
        yield cipher.update(zeros.subarray(0, n));
      }
    })(),
  );
  await pipeline(src, createWriteStream(path));
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: "ignore" });
    p.on("exit", (c) => (c === 0 ? resolve() : reject(new Error(`${cmd} exited ${c}`))));
    p.on("error", reject);
  });
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

interface Row {
  name: string;
  n: number;
  /** MB/s at the P50 and P95 of the durations (P95 duration = the slow end). */
  p50: number;
  p95: number;
  floorP50: number;
  /** MB/s at the P50 through one bare Node HTTP hop (`share-floor.ts`): the JS HTTP ceiling. */
  hopP50: number;
  /** MB/s at the P50 through two bare hops (a bare proxy in front of that server). */
  twoHopP50: number;
}

function mbps(size: number, ms: number[]): { p50: number; p95: number } {
  const s = [...ms].sort((a, b) => a - b);
  const mb = size / 1e6;
  return { p50: mb / (percentile(s, 50) / 1000), p95: mb / (percentile(s, 95) / 1000) };
}

export async function shareBenchMain(env: NodeJS.ProcessEnv): Promise<void> {
  const log = (msg: string) => process.stderr.write(`bench share: ${msg}\n`);
  const DATABASE_URL = env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
  const N = Number(env.BENCH_SHARE_N ?? 5);
  const suffix = randomBytes(4).toString("hex");
  const schema = `bench_share_${suffix}`;
  const key = `dnah_bench_share_${suffix}`;
  const stateDir = `/tmp/dnah-bench-share-${suffix}`;
  const work = join(stateDir, "bench-files");
  mkdirSync(work, { recursive: true });
  const stack = await startDevStack(
    {
      DATABASE_URL,
      DNAH_DB_SCHEMA: schema,
      DNAH_API_KEY: key,
      DNAH_PORT: "0",
      DNAH_GATEWAY_HOST: "127.0.0.1",
      DNAH_STATE_DIR: stateDir,
      DNAH_CGROUP_PARENT: `dnah-bench-share-${suffix}`,
      DNAH_POOL_SIZE: "0",
      DNAH_HOST_ID: `bench-share-${suffix}`,
      DNAH_CACHE_DIR: env.DNAH_CACHE_DIR ?? DEFAULT_CACHE_DIR,
    },
    silentLogger(),
  );
  const auth = { authorization: `Bearer ${key}` };
  let id: string | undefined;
  const teardown = async () => {
    if (id)
      await fetch(`${stack.url}/v1/sandboxes/${id}`, { method: "DELETE", headers: auth }).catch(() => {});
    await stack.close().catch(() => {});
    rmSync(stateDir, { recursive: true, force: true });
    const c = new pg.Client({ connectionString: DATABASE_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  };
  const curl = (args: string[]) => run("curl", ["-sSf", "-H", `authorization: Bearer ${key}`, ...args]);
  const release = cleanUpOnInterrupt(log, "deleting the sandbox and the stack", teardown);
  const rows: Row[] = [];
  try {
    const r = await fetch(`${stack.url}/v1/sandboxes`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: "{}",
    });
    if (r.status !== 201) throw new Error(`create: ${r.status} ${await r.text()}`);
    id = ((await r.json()) as { sandboxId: string }).sandboxId;
    // The jail's share is a filesystem of its own (sized by DNAH_SHARE_QUOTA_BYTES).
    const shareDir = join(stateDir, "sandboxes", id, "sharefs", "share");
    const hopDir = join(stateDir, "hop-floor");
    mkdirSync(hopDir, { recursive: true });
    const hop = await startFloorServer(hopDir);
    const twoHop = await startFloorProxy(hop.url);

    for (const [label, size, runs] of [
      ["1 MiB", MIB, Math.max(N * 4, 10)],
      ["64 MiB", 64 * MIB, N],
      ["1 GiB", 1024 * MIB, Math.min(N, 3)],
    ] as const) {
      log(`${label}: ${runs} runs each`);
      const src = join(work, `src-${size}`);
      await makeFile(src, size);
      await pipeline(createReadStream(src), new Writable({ write: (_c, _e, cb) => cb() }));
      const up: number[] = [];
      const down: number[] = [];
      const cpUp: number[] = [];
      const cpDown: number[] = [];
      const hopUp: number[] = [];
      const hopDown: number[] = [];
      const twoUp: number[] = [];
      const twoDown: number[] = [];
      for (let i = 0; i < runs; i++) {
        // Alternating with the floor, so both see the same disk and cache state.
        cpUp.push(await timed(() => run("cp", [src, join(shareDir, "cp-floor.bin")])));
        // The client is curl, its own process: what is measured is the gateway and the vmm.
        up.push(
          await timed(() =>
            curl([
              "-o",
              "/dev/null",
              "-T",
              src,
              "-H",
              "content-type: application/octet-stream",
              `${stack.url}/v1/sandboxes/${id}/share/bench.bin`,
            ]),
          ),
        );
        cpDown.push(await timed(() => run("cp", [join(shareDir, "bench.bin"), join(work, "cp-down.bin")])));
        down.push(
          await timed(() =>
            curl(["-o", join(work, "down.bin"), `${stack.url}/v1/sandboxes/${id}/share/bench.bin`]),
          ),
        );
        rmSync(join(work, "down.bin"), { force: true });
        hopUp.push(
          await timed(() => run("curl", ["-sSf", "-o", "/dev/null", "-T", src, `${hop.url}/bench.bin`])),
        );
        hopDown.push(
          await timed(() => run("curl", ["-sSf", "-o", join(work, "down.bin"), `${hop.url}/bench.bin`])),
        );
        rmSync(join(work, "down.bin"), { force: true });
        twoUp.push(
          await timed(() => run("curl", ["-sSf", "-o", "/dev/null", "-T", src, `${twoHop.url}/bench.bin`])),
        );
        twoDown.push(
          await timed(() => run("curl", ["-sSf", "-o", join(work, "down.bin"), `${twoHop.url}/bench.bin`])),
        );
        rmSync(join(work, "down.bin"), { force: true });
        rmSync(join(hopDir, "bench.bin"), { force: true });
        rmSync(join(work, "cp-down.bin"), { force: true });
        rmSync(join(shareDir, "cp-floor.bin"), { force: true });
      }
      const u = mbps(size, up);
      const d = mbps(size, down);
      rows.push({
        name: `upload ${label}`,
        n: runs,
        ...u,
        floorP50: mbps(size, cpUp).p50,
        hopP50: mbps(size, hopUp).p50,
        twoHopP50: mbps(size, twoUp).p50,
      });
      rows.push({
        name: `download ${label}`,
        n: runs,
        ...d,
        floorP50: mbps(size, cpDown).p50,
        hopP50: mbps(size, hopDown).p50,
        twoHopP50: mbps(size, twoDown).p50,
      });
      rmSync(src, { force: true });
      rmSync(join(shareDir, "bench.bin"), { force: true });
    }
    await twoHop.close();
    await hop.close();
  } finally {
    release();
    await teardown();
  }
  const out = process.stdout;
  const f = (n: number) => n.toFixed(0).padStart(8);
  out.write(
    `\n${"share transfer through the gateway".padEnd(36)} ${"n".padStart(3)} ${"P50 MB/s".padStart(8)} ${"P95 MB/s".padStart(8)}   ${"cp P50 MB/s".padStart(11)}  ratio   ${"1-hop P50".padStart(9)}  ratio   ${"2-hop P50".padStart(9)}  ratio\n`,
  );
  for (const r of rows)
    out.write(
      `${r.name.padEnd(36)} ${String(r.n).padStart(3)} ${f(r.p50)} ${f(r.p95)}   ${f(r.floorP50).padStart(11)}  ${(r.p50 / r.floorP50).toFixed(2).padStart(5)}x   ${f(r.hopP50).padStart(9)}  ${(r.hopP50 / r.floorP50).toFixed(2).padStart(5)}x   ${f(r.twoHopP50).padStart(9)}  ${(r.twoHopP50 / r.floorP50).toFixed(2).padStart(5)}x\n`,
    );
  out.write("\n");
}
