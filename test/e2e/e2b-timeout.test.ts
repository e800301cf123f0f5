import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Sandbox, SandboxNotFoundError } from "e2b";
import { startTestStack, type TestStack } from "./harness.js";

describe("E2B timeouts are enforced", () => {
  let s: TestStack;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "2" });
    opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
  });
  after(async () => {
    await s?.close();
  });

  test("a sandbox is killed when its timeout passes; setTimeout extends another", async () => {
    // Ordered so that a slow create on a loaded machine cannot expire a sandbox before the
    // test has looked at it: the extended one gets a long first timeout, then the short one.
    const extendedAt = Date.now();
    const extended = await Sandbox.create({ ...opts, timeoutMs: 8_000 });
    await extended.setTimeout(120_000);
    const short = await Sandbox.create({ ...opts, timeoutMs: 3_000 });
    const deadline = Date.now() + 30_000;
    while ((await short.isRunning()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    assert.equal(await short.isRunning(), false, "the sandbox outlived its timeout");
    await assert.rejects(
      Sandbox.getInfo(short.sandboxId, opts),
      (e: unknown) => e instanceof SandboxNotFoundError,
    );
    // The extended one is alive well past its original 8 s.
    while (Date.now() < extendedAt + 10_000) await new Promise((r) => setTimeout(r, 250));
    assert.equal(await extended.isRunning(), true);
    assert.equal((await extended.commands.run("echo still here")).stdout, "still here\n");
    const info = await Sandbox.getInfo(extended.sandboxId, opts);
    assert.ok(info.endAt.getTime() > Date.now() + 60_000);
    await extended.kill();
  });
});
