/**
 * `npm run bench -- --snapshot [--qemu]`: signed snapshots through the native REST API of a
 * dev stack (jail runtime by default, qemu with `--qemu`), each beside a floor measured in the
 * same run:
 *
 *   pause, resume                       vs  an exec round trip (`true`) on the same sandbox
 *   snapshot                            vs  a bare `cp` of the snapshot's files (same bytes)
 *   verify + restore, fork (count 2)    vs  a cold create through the same API (no pool)
 *   verify throughput (MB/s)            vs  `sha256sum <files>` on the same files
 *
 * Verify throughput runs the vmm's own verification (`SnapshotStore.verify`: MANIFEST against
 * the signed digest, then every file's streaming SHA-256) on the folder the snapshot left in
 * `<stateDir>/snapshots/<id>/`, alternating with the floor, page cache warm for both.
 * Every sandbox and snapshot it makes is deleted, also on failure and on SIGINT/SIGTERM.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { startDevStack } from "@dnah/cli";
import { silentLogger } from "@dnah/platform";
import { DEFAULT_CACHE_DIR, DEFAULT_DEBIAN_MIRROR, findTemplate } from "@dnah/vmm";
import pg from "pg";
import { QemuRuntime } from "../../services/vmm/src/runtime/qemu/qemu.js";
import { parseManifest } from "../../services/vmm/src/snapshot/manifest.js";
import { SnapshotStore } from "../../services/vmm/src/snapshot/store.js";
import { cleanUpOnInterrupt } from "./interrupt.js";
import { accelFromEnv } from "./qemu.js";
import { type Summary, summarize } from "./stats.js";

type Runtime = "jail" | "qemu";

interface SnapshotJson {
  snapshotId: string;
  sizeBytes: number;
  memory: boolean;
  manifestSha256: string;
  restoreSemantics?: string;
  files: { name: string; sizeBytes: number; sha256: string }[];
}

interface Row {
  s: Summary;
  floor: Summary;
}

const HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

function int(env: NodeJS.ProcessEnv, name: string, def: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(`${name} must be an integer in ${min}..${max}, got '${raw}'`);
  return n;
}

/** Why the qemu runtime cannot run here, or undefined when it can. */
function qemuUnavailable(cacheDir: string, env: NodeJS.ProcessEnv): string | undefined {
  const qemuBinary = env.DNAH_QEMU_BINARY || "/usr/bin/qemu-system-x86_64";
  if (!existsSync(qemuBinary)) return `${qemuBinary} not found`;
  const missing = QemuRuntime.missing({ cacheDir, qemuBinary });
  if (missing.length > 0) return `missing ${missing.join(", ")}`;
  return undefined;
}

/** Entry point; sets process.exitCode to 1 when a cycle failed. */
export async function snapshotBenchMain(env: NodeJS.ProcessEnv, argv: readonly string[]): Promise<void> {
  const runtime: Runtime = argv.includes("--qemu") ? "qemu" : "jail";
  const cacheDir = env.DNAH_CACHE_DIR || DEFAULT_CACHE_DIR;
  const log = (msg: string) => process.stderr.write(`bench snapshot ${runtime}: ${msg}\n`);
  if (runtime === "qemu") {
    const why = qemuUnavailable(cacheDir, env);
    if (why !== undefined) {
      process.stdout.write(`\nsnapshot benchmark, qemu runtime: skipped: ${why}\n\n`);
      return;
    }
  }
  const template = findTemplate(cacheDir, "base", env.DNAH_DEBIAN_MIRROR || DEFAULT_DEBIAN_MIRROR);
  if (!template) throw new Error("base template not built: run 'npm run template' first");

  const n = int(env, "BENCH_SNAPSHOT_N", runtime === "qemu" ? 3 : 5, 1, 1000);
  const dataMib = int(env, "BENCH_SNAPSHOT_DATA_MIB", 16, 0, 4096);
  const DATABASE_URL = env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
  const suffix = randomBytes(4).toString("hex");
  const schema = `bench_snap_${suffix}`;
  const key = `dnah_bench${suffix}`;
  const stateDir = mkdtempSync(`/tmp/dnah-bench-snap-${suffix}-`);
  const scratch = mkdtempSync(`/tmp/dnah-bench-snap-cp-${suffix}-`);

  log(`starting a dev stack (pool 0, state ${stateDir})`);
  const stack = await startDevStack(
    {
      DATABASE_URL,
      DNAH_DB_SCHEMA: schema,
      DNAH_API_KEY: key,
      DNAH_PORT: "0",
      DNAH_GATEWAY_HOST: "127.0.0.1",
      DNAH_STATE_DIR: stateDir,
      DNAH_SNAPSHOT_KEYS_DIR: join(stateDir, "keys"),
      DNAH_CGROUP_PARENT: `dnah-bench-snap-${suffix}`,
      // No warm pool: nothing boots in the background while a measurement runs.
      DNAH_POOL_SIZE: "0",
      DNAH_HOST_ID: `bench-snap-${suffix}`,
      DNAH_CACHE_DIR: cacheDir,
      DNAH_RUNTIME: runtime,
      DNAH_QEMU_ACCEL: accelFromEnv(env),
      ...(runtime === "qemu" && { DNAH_VM_BOOT_TIMEOUT_MS: "300000", DNAH_VMM_CALL_TIMEOUT_MS: "300000" }),
    },
    silentLogger(),
  );

  const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  const call = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(stack.url + path, {
      method,
      headers,
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await r.text();
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return (text === "" ? {} : JSON.parse(text)) as Record<string, unknown>;
  };
  const timed = async <T>(into: number[], fn: () => Promise<T>): Promise<T> => {
    const t = performance.now();
    const out = await fn();
    into.push(performance.now() - t);
    return out;
  };

  const sandboxes = new Set<string>();
  const snapshots = new Set<string>();
  const cleanup = async () => {
    await Promise.all(
      [...sandboxes].map((id) =>
        call("DELETE", `/v1/sandboxes/${id}`).then(
          () => sandboxes.delete(id),
          (e: Error) => log(`delete sandbox ${id}: ${e.message}`),
        ),
      ),
    );
    await Promise.all(
      [...snapshots].map((id) =>
        call("DELETE", `/v1/snapshots/${id}`).then(
          () => snapshots.delete(id),
          (e: Error) => log(`delete snapshot ${id}: ${e.message}`),
        ),
      ),
    );
  };
  const teardown = async () => {
    await cleanup();
    await stack.close().catch((e: Error) => log(`stack close: ${e.message}`));
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
    const c = new pg.Client({ connectionString: DATABASE_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  };
  const release = cleanUpOnInterrupt(log, "deleting sandboxes and snapshots", teardown);

  const create: number[] = [];
  const execRtt: number[] = [];
  const pause: number[] = [];
  const resume: number[] = [];
  const snapshot: number[] = [];
  const copy: number[] = [];
  const restore: number[] = [];
  const fork: number[] = [];
  const verifyMBs: number[] = [];
  const sha256sumMBs: number[] = [];
  const sizes: number[] = [];
  const failures: string[] = [];
  let last: SnapshotJson | undefined;

  try {
    for (let i = 0; i < n; i++) {
      log(`cycle ${i + 1}/${n}`);
      try {
        const sb = await timed(create, () => call("POST", "/v1/sandboxes", {}));
        const id = String(sb.sandboxId);
        sandboxes.add(id);
        const exec = (command: string) => call("POST", `/v1/sandboxes/${id}/exec`, { command });
        // Something to carry: data on the disk and in the share, not only the template.
        await exec(
          `head -c ${dataMib}M /dev/urandom > ~/bench.bin && head -c 1M /dev/urandom > /mnt/dnah-share/bench.bin`,
        );
        for (let k = 0; k < 5; k++) await timed(execRtt, () => exec("true"));

        await timed(pause, () => call("POST", `/v1/sandboxes/${id}/pause`));
        await timed(resume, () => call("POST", `/v1/sandboxes/${id}/resume`));
        await exec("test -s ~/bench.bin"); // it really came back

        const snap = (
          await timed(snapshot, () =>
            call("POST", `/v1/sandboxes/${id}/snapshot`, { name: `bench-${suffix}-${i}` }),
          )
        ).snapshot as SnapshotJson;
        snapshots.add(snap.snapshotId);
        sizes.push(snap.sizeBytes);
        last = snap;

        const dir = join(stateDir, "snapshots", snap.snapshotId);
        const names = parseManifest(readFileSync(join(dir, "MANIFEST"))).map((f) => f.name);
        copy.push(await copyFloor(dir, names, join(scratch, String(i))));
        const store = new SnapshotStore(join(stateDir, "snapshots"), HOST_PATH);
        await sha256sum(dir, names); // warm the page cache for both
        for (let k = 0; k < 3; k++) {
          const t = performance.now();
          await store.verify(snap.snapshotId, snap.manifestSha256, snap.sizeBytes);
          verifyMBs.push(snap.sizeBytes / 1e6 / ((performance.now() - t) / 1000));
          const ms = await sha256sum(dir, names);
          sha256sumMBs.push(snap.sizeBytes / 1e6 / (ms / 1000));
        }

        const restored = (
          await timed(restore, () => call("POST", `/v1/snapshots/${snap.snapshotId}/restore`, {}))
        ).sandbox as { sandboxId: string };
        sandboxes.add(restored.sandboxId);
        await call("POST", `/v1/sandboxes/${restored.sandboxId}/exec`, { command: "test -s ~/bench.bin" });

        const forked = (await timed(fork, () => call("POST", `/v1/sandboxes/${id}/fork`, { count: 2 })))
          .results as { sandbox?: { sandboxId: string }; error?: string }[];
        for (const r of forked) if (r.sandbox) sandboxes.add(r.sandbox.sandboxId);
        const errors = forked.filter((r) => r.error !== undefined).map((r) => r.error);
        if (errors.length > 0) throw new Error(`fork: ${errors.join("; ")}`);
      } catch (err) {
        failures.push(`cycle ${i + 1}: ${(err as Error).message}`);
        log(`cycle ${i + 1} failed: ${(err as Error).message}`);
      } finally {
        await cleanup();
        rmSync(join(scratch, String(i)), { recursive: true, force: true });
      }
    }
  } finally {
    release();
    await teardown();
  }

  const floorExec = summarize("exec round trip (`true`)", execRtt);
  const floorCreate = summarize("cold create (POST /v1/sandboxes)", create);
  const rows: Row[] = [
    { s: summarize("pause (POST …/pause)", pause), floor: floorExec },
    { s: summarize("resume (POST …/resume)", resume), floor: floorExec },
    {
      s: summarize("snapshot (POST …/snapshot, signed)", snapshot),
      floor: summarize("bare cp of its files", copy),
    },
    { s: summarize("verify + restore (POST /v1/snapshots/…/restore)", restore), floor: floorCreate },
    { s: summarize("fork, count 2 (POST …/fork)", fork), floor: floorCreate },
  ];
  const out = process.stdout;
  const fmt = (x: number) => (Number.isNaN(x) ? "-" : x < 10 ? x.toFixed(2) : x.toFixed(1)).padStart(8);
  out.write(
    `\nsnapshot benchmark, ${runtime} runtime (${stack.isolation}), ${n} cycles, ${dataMib} MiB written per sandbox\n`,
  );
  out.write(
    `${"measurement".padEnd(50)} ${"n".padStart(3)} ${"P50 ms".padStart(8)} ${"P95 ms".padStart(8)}   ${"floor".padEnd(34)} ${"P50 ms".padStart(8)} ${"P95 ms".padStart(8)}   ratio\n`,
  );
  for (const { s, floor } of rows) {
    out.write(
      `${s.name.padEnd(50)} ${String(s.n).padStart(3)} ${fmt(s.p50)} ${fmt(s.p95)}   ${floor.name.padEnd(34)} ${fmt(floor.p50)} ${fmt(floor.p95)}   ${(s.p50 / floor.p50).toFixed(1).padStart(5)}x\n`,
    );
  }
  const v = summarize("verify (SnapshotStore.verify)", verifyMBs);
  const f = summarize("sha256sum <files>", sha256sumMBs);
  out.write(
    `${"verify throughput (SnapshotStore.verify), MB/s".padEnd(50)} ${String(v.n).padStart(3)} ${fmt(v.p50)} ${"".padStart(8)}   ${"sha256sum <files>, MB/s".padEnd(34)} ${fmt(f.p50)} ${"".padStart(8)}   ${(v.p50 / f.p50).toFixed(2).padStart(5)}x\n`,
  );
  const sz = summarize("size", sizes);
  out.write(
    `\nsnapshot size P50 ${(sz.p50 / 2 ** 20).toFixed(1)} MiB (min ${(Math.min(...sizes) / 2 ** 20).toFixed(1)}, max ${(Math.max(...sizes) / 2 ** 20).toFixed(1)})` +
      (last
        ? `, memory: ${last.memory}${last.restoreSemantics ? ` (${last.restoreSemantics})` : ""}\n  files: ${last.files.map((x) => `${x.name} ${(x.sizeBytes / 2 ** 20).toFixed(1)} MiB`).join(", ")}\n`
        : "\n"),
  );
  out.write(`cycles: ${n - failures.length} of ${n} completed\n`);
  for (const msg of failures) out.write(`  failed: ${msg}\n`);
  out.write("\n");
  if (failures.length > 0) process.exitCode = 1;
}

/** `sha256sum <files>` in the folder; resolves to its wall time in ms. */
function sha256sum(dir: string, names: readonly string[]): Promise<number> {
  return runTimed("sha256sum", ["--", ...names], dir);
}

/** A bare `cp` of the same files to a fresh folder on the same filesystem, then `sync`. */
async function copyFloor(dir: string, names: readonly string[], dest: string): Promise<number> {
  const t = performance.now();
  await runTimed("mkdir", ["-p", dest], dir);
  await runTimed("cp", ["--reflink=never", "--", ...names, dest], dir);
  await runTimed("sync", ["-f", dest], dir);
  return performance.now() - t;
}

function runTimed(cmd: string, args: readonly string[], cwd: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const p = spawn(cmd, args, { cwd, stdio: ["ignore", "ignore", "pipe"], env: { PATH: HOST_PATH } });
    let err = "";
    p.stderr.on("data", (c: Buffer) => {
      if (err.length < 4096) err += c.toString();
    });
    p.on("error", reject);
    p.on("close", (code) =>
      code === 0 ? resolve(performance.now() - t) : reject(new Error(`${cmd} exited ${code}: ${err.trim()}`)),
    );
  });
}
