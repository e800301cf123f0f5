import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Sandbox, SandboxError, SandboxNotFoundError } from "e2b";
import { startTestStack, type TestStack } from "./harness.js";

/**
 * `getMetrics` (GET /sandboxes/{id}/metrics): dnah keeps no history, so each call measures the
 * sandbox once and answers that one sample (none when [start, end] excludes now).
 */
describe("e2b SDK: sandbox metrics", () => {
  let s: TestStack;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
  let sbx: Sandbox;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
    sbx = await Sandbox.create(opts);
  });
  after(async () => {
    if (sbx !== undefined) await Sandbox.kill(sbx.sandboxId, opts).catch(() => undefined);
    await s?.close();
  });

  test("one sample with every field, measured now", async () => {
    const before = Date.now();
    const metrics = await sbx.getMetrics();
    assert.equal(metrics.length, 1);
    const m = metrics[0]!;
    assert.ok(m.timestamp instanceof Date);
    assert.ok(Math.abs(m.timestamp.getTime() - before) < 60_000, String(m.timestamp));
    assert.ok(Number.isInteger(m.cpuCount) && m.cpuCount >= 1, `cpuCount ${m.cpuCount}`);
    assert.ok(m.cpuUsedPct >= 0, `cpuUsedPct ${m.cpuUsedPct}`);
    assert.ok(m.memUsed > 0, `memUsed ${m.memUsed}`);
    assert.ok(m.memTotal >= m.memUsed, `memTotal ${m.memTotal} < memUsed ${m.memUsed}`);
    assert.ok(m.memCache >= 0);
    assert.ok(m.diskTotal >= m.diskUsed && m.diskUsed >= 0, `disk ${m.diskUsed}/${m.diskTotal}`);
    // The static form, and a window that includes now.
    const windowed = await Sandbox.getMetrics(sbx.sandboxId, {
      ...opts,
      start: new Date(Date.now() - 60_000),
      end: new Date(Date.now() + 60_000),
    });
    assert.equal(windowed.length, 1);
  });

  test("a window that excludes now has no samples (no history is kept)", async () => {
    const past = await Sandbox.getMetrics(sbx.sandboxId, {
      ...opts,
      start: new Date(Date.now() - 3_600_000),
      end: new Date(Date.now() - 1_800_000),
    });
    assert.deepEqual(past, []);
  });

  test("raw API: SandboxMetric fields, bad windows are 400, the v1 batch route", async () => {
    const get = (path: string) => fetch(s.url + path, { headers: { "x-api-key": s.key } });
    const res = await get(`/sandboxes/${sbx.sandboxId}/metrics`);
    assert.equal(res.status, 200);
    const [m] = (await res.json()) as Record<string, unknown>[];
    assert.deepEqual(Object.keys(m!).sort(), [
      "cpuCount",
      "cpuUsedPct",
      "diskTotal",
      "diskUsed",
      "memCache",
      "memTotal",
      "memUsed",
      "timestamp",
      "timestampUnix",
    ]);
    assert.equal(m!.timestampUnix, Math.floor(Date.parse(m!.timestamp as string) / 1000));
    for (const q of ["start=soon", "end=1.5", "start=20&end=10", "start=1&start=2"]) {
      const bad = await get(`/sandboxes/${sbx.sandboxId}/metrics?${q}`);
      assert.equal(bad.status, 400, q);
      assert.equal(((await bad.json()) as { code: number }).code, 400);
    }
    const batch = await get(`/sandboxes/metrics?sandbox_ids=${sbx.sandboxId},nosuchsandbox`);
    assert.equal(batch.status, 200);
    const body = (await batch.json()) as { sandboxes: Record<string, { memUsed: number }> };
    assert.deepEqual(Object.keys(body.sandboxes), [sbx.sandboxId]);
    assert.ok(body.sandboxes[sbx.sandboxId]!.memUsed > 0);
    assert.equal((await get("/sandboxes/metrics")).status, 400);
  });

  test("a paused sandbox still reports; unknown and killed sandboxes are SandboxNotFoundError", async () => {
    const other = await Sandbox.create(opts);
    try {
      assert.equal(await other.pause(), true);
      assert.equal((await Sandbox.getMetrics(other.sandboxId, opts)).length, 1);
    } finally {
      await other.kill();
    }
    await assert.rejects(Sandbox.getMetrics(other.sandboxId, opts), SandboxNotFoundError);
    await assert.rejects(Sandbox.getMetrics("nosuchsandbox", opts), (err: unknown) => {
      assert.ok(err instanceof SandboxNotFoundError, String(err));
      assert.ok(err instanceof SandboxError);
      return true;
    });
  });
});
