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
    const short = await Sandbox.create({ ...opts, timeoutMs: 2_000 });
    const extended = await Sandbox.create({ ...opts, timeoutMs: 2_000 });
    await extended.setTimeout(120_000);
    assert.equal(await short.isRunning(), true);
    const deadline = Date.now() + 20_000;
    while ((await short.isRunning()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    assert.equal(await short.isRunning(), false, "the sandbox outlived its timeout");
    await assert.rejects(
      Sandbox.getInfo(short.sandboxId, opts),
      (e: unknown) => e instanceof SandboxNotFoundError,
    );
    // The extended one is alive well past its original 2 s.
    assert.equal(await extended.isRunning(), true);
    assert.equal((await extended.commands.run("echo still here")).stdout, "still here\n");
    const info = await Sandbox.getInfo(extended.sandboxId, opts);
    assert.ok(info.endAt.getTime() > Date.now() + 60_000);
    await extended.kill();
  });
});
