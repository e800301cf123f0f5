import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Sandbox, SandboxError, SandboxNotFoundError, type SandboxOpts } from "e2b";
import { Sandbox as Sandbox250 } from "e2b-2-50";
import { eventually, startTestStack, type TestStack } from "./harness.js";

/** Pause, resume (connect) and autoPause through the real `e2b` SDK, on jail sandboxes. */
describe("e2b SDK: pause and resume", () => {
  let s: TestStack;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
  const created: string[] = [];

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
  });
  after(async () => {
    for (const id of created) await Sandbox.kill(id, opts).catch(() => undefined);
    await s?.close();
  });

  async function fresh(extra: SandboxOpts = {}): Promise<Sandbox> {
    const sbx = await Sandbox.create({ ...opts, ...extra });
    created.push(sbx.sandboxId);
    return sbx;
  }

  test("pause → not running, listed paused → pause again is false → connect resumes with state intact", async () => {
    const sbx = await fresh({ metadata: { suite: "e2b-pause" } });
    await sbx.files.write("/tmp/before-pause.txt", "kept across pause\n");
    const bg = await sbx.commands.run("sleep 600", { background: true });
    const pausedAfter = Date.now() - 2_000;

    assert.equal(await sbx.pause(), true);
    assert.equal(await sbx.isRunning(), false, "a paused sandbox's sandbox URL answers 502");
    const info = await Sandbox.getInfo(sbx.sandboxId, opts);
    assert.equal(info.state, "paused");
    // E2B: a paused sandbox's endAt is its pause time.
    assert.ok(
      info.endAt.getTime() >= pausedAfter && info.endAt.getTime() <= Date.now() + 2_000,
      String(info.endAt),
    );
    const paused = await Sandbox.list({
      ...opts,
      query: { state: ["paused"], metadata: { suite: "e2b-pause" } },
    }).nextItems();
    assert.deepEqual(
      paused.map((i) => [i.sandboxId, i.state]),
      [[sbx.sandboxId, "paused"]],
    );
    const running = await Sandbox.list({
      ...opts,
      query: { state: ["running"], metadata: { suite: "e2b-pause" } },
    }).nextItems();
    assert.deepEqual(running, []);

    assert.equal(await sbx.pause(), false, "pausing twice");
    assert.equal(await Sandbox.pause(sbx.sandboxId, opts), false);
    // A paused sandbox has no timeout to set (E2B: 404).
    await assert.rejects(sbx.setTimeout(60_000), SandboxNotFoundError);

    const resumed = await Sandbox.connect(sbx.sandboxId, { ...opts, timeoutMs: 120_000 });
    assert.equal(resumed.sandboxId, sbx.sandboxId);
    assert.equal(await resumed.isRunning(), true);
    assert.equal((await resumed.commands.run("echo resumed")).stdout, "resumed\n");
    assert.equal(await resumed.files.read("/tmp/before-pause.txt"), "kept across pause\n");
    const pids = (await resumed.commands.list()).map((p) => p.pid);
    assert.ok(pids.includes(bg.pid), `the background process survived the pause (${pids.join(",")})`);
    const after = await Sandbox.getInfo(sbx.sandboxId, opts);
    assert.equal(after.state, "running");
    assert.ok(after.endAt.getTime() > Date.now() + 60_000, "connect gave it a fresh timeout");
    // The old handle works again too: same id, same token.
    assert.equal((await sbx.commands.run("echo old handle")).stdout, "old handle\n");
  });

  test("connect on a running sandbox is 200 and resume on it is 409", async () => {
    const sbx = await fresh();
    const connect = await fetch(`${s.url}/v2/sandboxes/${sbx.sandboxId}/connect`, {
      method: "POST",
      headers: { "x-api-key": s.key, "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(connect.status, 200);
    const resume = await fetch(`${s.url}/sandboxes/${sbx.sandboxId}/resume`, {
      method: "POST",
      headers: { "x-api-key": s.key, "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(resume.status, 409);
    assert.equal(((await resume.json()) as { code: number }).code, 409);
    // The deprecated resume route resumes a paused one with 201.
    assert.equal(await sbx.pause(), true);
    const again = await fetch(`${s.url}/sandboxes/${sbx.sandboxId}/resume`, {
      method: "POST",
      headers: { "x-api-key": s.key, "content-type": "application/json" },
      body: JSON.stringify({ timeout: 60 }),
    });
    assert.equal(again.status, 201, await again.clone().text());
    const body = (await again.json()) as { sandboxID: string; envdVersion: string };
    assert.equal(body.sandboxID, sbx.sandboxId);
    assert.equal((await sbx.commands.run("echo back")).stdout, "back\n");
  });

  test("e2b 2.50 (v1 connect) resumes a paused sandbox", async () => {
    const old = await Sandbox250.create(opts);
    created.push(old.sandboxId);
    assert.equal(await old.pause(), true);
    assert.equal(await old.isRunning(), false);
    const back = await Sandbox250.connect(old.sandboxId, opts);
    assert.equal((await back.commands.run("echo v1")).stdout, "v1\n");
  });

  test("pause without memory and autoResume are refused with 400; unknown ids are SandboxNotFoundError", async () => {
    const sbx = await fresh();
    await assert.rejects(sbx.pause({ keepMemory: false }), (err: unknown) => {
      assert.ok(err instanceof SandboxError, String(err));
      assert.match(err.message, /^400: 'memory: false' is not supported/);
      return true;
    });
    assert.equal(await sbx.isRunning(), true);
    await assert.rejects(
      Sandbox.create({ ...opts, lifecycle: { onTimeout: "pause", autoResume: true } }),
      /^SandboxError: 400: 'autoResume' is not supported|400: 'autoResume' is not supported/,
    );
    await assert.rejects(Sandbox.pause("nosuchsandbox", opts), SandboxNotFoundError);
    await assert.rejects(Sandbox.connect("nosuchsandbox", opts), SandboxNotFoundError);
  });

  test("killing a paused sandbox", async () => {
    const sbx = await fresh();
    assert.equal(await sbx.pause(), true);
    assert.equal(await sbx.kill(), true);
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId, opts), SandboxNotFoundError);
    assert.equal(await Sandbox.kill(sbx.sandboxId, opts), false);
    await assert.rejects(Sandbox.pause(sbx.sandboxId, opts), SandboxNotFoundError);
    await assert.rejects(Sandbox.connect(sbx.sandboxId, opts), SandboxNotFoundError);
  });

  test("lifecycle onTimeout pause: the timeout pauses instead of killing; connect resumes", async () => {
    const sbx = await fresh({ timeoutMs: 2_000, lifecycle: { onTimeout: "pause" } });
    await sbx.files.write("/tmp/auto.txt", "auto\n");
    const info = await sbx.getInfo();
    assert.deepEqual(info.lifecycle, { onTimeout: "pause", autoResume: false });
    await eventually(async () => (await Sandbox.getInfo(sbx.sandboxId, opts)).state === "paused", 60_000);
    assert.equal(await sbx.isRunning(), false);
    // Paused sandboxes have no deadline: it is neither killed nor touched again.
    const paused = await Sandbox.getInfo(sbx.sandboxId, opts);
    await new Promise((r) => setTimeout(r, 2_500));
    const still = await Sandbox.getInfo(sbx.sandboxId, opts);
    assert.equal(still.state, "paused");
    assert.equal(still.endAt.getTime(), paused.endAt.getTime());
    const back = await Sandbox.connect(sbx.sandboxId, { ...opts, timeoutMs: 120_000 });
    assert.equal(await back.files.read("/tmp/auto.txt"), "auto\n");
    assert.equal((await Sandbox.getInfo(sbx.sandboxId, opts)).state, "running");
  });
});
