import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { startDevStack } from "@dnah/cli";
import { createServiceClient, silentLogger } from "@dnah/platform";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { DEFAULT_CACHE_DIR, DEFAULT_DEBIAN_MIRROR, findTemplate } from "@dnah/vmm";
import { Sandbox } from "e2b";
import pg from "pg";
import { bwrapFloor, postgresUpdateFloor, unixRoundTripFloor } from "./floors.js";
import { qemuBenchMain } from "./qemu.js";
import { shareBenchMain } from "./share.js";
import { snapshotBenchMain } from "./snapshot.js";
import { type Summary, sample, summarize } from "./stats.js";

/**
 * `npm run bench`: P50/P95 of dnah's hot paths on this machine, each beside a floor measured
 * in the same run, and the ratio to it. Needs root, the base template and Postgres.
 * `npm run bench -- --qemu` runs the qemu microVM benchmark instead (`./qemu.ts`);
 * `npm run bench -- --snapshot [--qemu]` the snapshot benchmark (`./snapshot.ts`);
 * `npm run bench -- --share` the share's bulk transfer benchmark (`./share.ts`).
 */
if (process.argv.includes("--share")) {
  await shareBenchMain(process.env);
  process.exit();
}
if (process.argv.includes("--snapshot")) {
  await snapshotBenchMain(process.env, process.argv);
  process.exit();
}
if (process.argv.includes("--qemu")) {
  await qemuBenchMain(process.env);
  process.exit();
}
const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const N = Number(process.env.BENCH_N ?? 50);
const suffix = randomBytes(4).toString("hex");
const schema = `bench_${suffix}`;
const key = `dnah_bench${suffix}`;
const cacheDir = process.env.DNAH_CACHE_DIR ?? DEFAULT_CACHE_DIR;
const template = findTemplate(cacheDir, "base", process.env.DNAH_DEBIAN_MIRROR ?? DEFAULT_DEBIAN_MIRROR);
if (!template) throw new Error("base template not built: run 'npm run template' first");

const POOL = 10;
const stateDir = `/tmp/dnah-bench-${suffix}`;
const stack = await startDevStack(
  {
    DATABASE_URL,
    DNAH_DB_SCHEMA: schema,
    DNAH_API_KEY: key,
    DNAH_PORT: "0",
    DNAH_GATEWAY_HOST: "127.0.0.1",
    DNAH_STATE_DIR: stateDir,
    DNAH_CGROUP_PARENT: `dnah-bench-${suffix}`,
    DNAH_POOL_SIZE: String(POOL),
    DNAH_HOST_ID: `bench-${suffix}`,
    DNAH_CACHE_DIR: cacheDir,
    DNAH_VMM_CAPACITY: "256",
  },
  silentLogger(),
);
const auth = { authorization: `Bearer ${key}`, "content-type": "application/json" };
const post = async (path: string, body: unknown) => {
  const r = await fetch(stack.url + path, { method: "POST", headers: auth, body: JSON.stringify(body) });
  if (r.status >= 300) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json() as Promise<Record<string, unknown>>;
};
const del = (id: string) => fetch(`${stack.url}/v1/sandboxes/${id}`, { method: "DELETE", headers: auth });
const scheduler = createServiceClient(SchedulerService, stack.schedulerUrl);
const vmm = createServiceClient(VmmService, stack.vmmUrl);
const db = new pg.Client({ connectionString: DATABASE_URL, options: `-c search_path=${schema}` });
await db.connect();
try {
  const pooled = async () =>
    Number(
      (await db.query("SELECT count(*) AS n FROM sandboxes WHERE pooled AND state = 'running'")).rows[0].n,
    );
  const waitPool = async () => {
    const deadline = Date.now() + 120_000;
    while ((await pooled()) < POOL) {
      if (Date.now() > deadline) throw new Error("pool did not refill");
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const rows: Array<{ s: Summary; floor: Summary }> = [];
  const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

  // Floors.
  const floorBwrap = summarize("bare bwrap … true", await bwrapFloor(Math.min(N, 30), template.rootfsDir));
  const floorUnix = summarize("bare unix-socket round trip", await unixRoundTripFloor(N * 10));
  const floorPg = summarize(
    "bare single-row Postgres UPDATE",
    await postgresUpdateFloor(N * 4, DATABASE_URL),
  );

  // Warm allocation: the scheduler's pool claim on a quiet host (the pool full, nothing booting),
  // then in bursts, where each claim competes with the refills the earlier ones started.
  log("warm allocation");
  const claimed: string[] = [];
  const claim = async (into: number[]) => {
    const t = performance.now();
    const r = await scheduler.createSandbox({ templateId: "base" });
    into.push(performance.now() - t);
    if (!r.pooled) throw new Error("claim missed the pool");
    claimed.push(r.sandbox!.sandboxId);
  };
  const warm: number[] = [];
  while (warm.length < N) {
    await waitPool();
    await claim(warm);
    if (claimed.length >= POOL / 2) await Promise.all(claimed.splice(0).map(del));
  }
  await Promise.all(claimed.splice(0).map(del));
  rows.push({ s: summarize("warm allocation (pool claim, quiet host)", warm), floor: floorPg });
  const burst: number[] = [];
  while (burst.length < N) {
    await waitPool();
    for (let i = 0; i < POOL - 1 && burst.length < N; i++) await claim(burst);
    await Promise.all(claimed.splice(0).map(del));
  }
  rows.push({ s: summarize("warm allocation (bursts of 9, refills running)", burst), floor: floorPg });

  // Cold spawn: the vmm boots a sandbox until its agent answers.
  log("cold spawn");
  const cold = await sample(Math.min(N, 30), async () => {
    const id = `bench${randomBytes(6).toString("hex")}`;
    await vmm.createVm({ sandboxId: id, templateId: "base" });
    claimed.push(id);
  });
  await Promise.all(claimed.splice(0).map((id) => vmm.deleteVm({ sandboxId: id })));
  rows.push({ s: summarize("cold spawn (vmm.CreateVm → agent /health)", cold), floor: floorBwrap });

  // First exec after create, through the gateway.
  log("first exec after create");
  await waitPool();
  const first: number[] = [];
  for (let i = 0; i < Math.min(N, POOL - 1) * 2; i++) {
    if (i % (POOL - 1) === 0) await waitPool();
    const sb = await post("/v1/sandboxes", {});
    const t = performance.now();
    await post(`/v1/sandboxes/${sb.sandboxId}/exec`, { command: "true" });
    first.push(performance.now() - t);
    claimed.push(String(sb.sandboxId));
  }
  await Promise.all(claimed.splice(0).map(del));
  rows.push({ s: summarize("first exec after create (gateway → agent)", first), floor: floorUnix });

  // Exec round trip.
  log("exec round trip");
  await waitPool();
  const sb = await post("/v1/sandboxes", {});
  await post(`/v1/sandboxes/${sb.sandboxId}/exec`, { command: "true" });
  const rtt = await sample(N * 4, () => post(`/v1/sandboxes/${sb.sandboxId}/exec`, { command: "true" }));
  await del(String(sb.sandboxId));
  const nativeRtt = summarize("exec round trip (`true`, gateway → agent)", rtt);
  rows.push({ s: nativeRtt, floor: floorUnix });

  // The same through the unmodified E2B SDK, against the native path measured just above.
  log("E2B SDK commands.run");
  await waitPool();
  const sbx = await Sandbox.create({ apiKey: key, apiUrl: stack.url, sandboxUrl: stack.url });
  await sbx.commands.run("true");
  const sdk = await sample(N * 4, () => sbx.commands.run("true"));
  await sbx.kill();
  rows.push({
    s: summarize("E2B SDK commands.run('true')", sdk),
    floor: { ...nativeRtt, name: "native exec round trip" },
  });

  // Sequential create+delete through the gateway with the pool refilling as it goes: past
  // the first few claims the rate is bounded by how fast this host boots sandboxes.
  const SEQ = Number(process.env.BENCH_SEQ ?? 100);
  log(`sequential create+delete, pool of ${POOL}`);
  await waitPool();
  const t0 = performance.now();
  for (let i = 0; i < SEQ; i++) {
    const x = await post("/v1/sandboxes", {});
    await del(String(x.sandboxId));
  }
  const perSec = SEQ / ((performance.now() - t0) / 1000);

  const fmt = (n: number) => (n < 10 ? n.toFixed(2) : n.toFixed(1)).padStart(7);
  const out = process.stdout;
  out.write(
    `\n${"measurement".padEnd(46)} ${"n".padStart(4)} ${"P50 ms".padStart(7)} ${"P95 ms".padStart(7)}   floor (P50 ms)                          ratio\n`,
  );
  for (const { s, floor } of rows) {
    out.write(
      `${s.name.padEnd(46)} ${String(s.n).padStart(4)} ${fmt(s.p50)} ${fmt(s.p95)}   ${floor.name.padEnd(32)} ${fmt(floor.p50)}  ${(s.p50 / floor.p50).toFixed(1).padStart(6)}x\n`,
    );
  }
  out.write(
    `${`sequential create+delete, pool of ${POOL} (refilling)`.padEnd(46)} ${String(SEQ).padStart(4)} ${perSec.toFixed(1).padStart(7)} /s\n\n`,
  );
} finally {
  await db.end().catch(() => {});
  await stack.close();
  rmSync(stateDir, { recursive: true, force: true });
}
const c = new pg.Client({ connectionString: DATABASE_URL });
await c.connect();
await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
await c.end();
