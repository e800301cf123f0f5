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
  test("the timeout is the native lifecycle's deadline: read and changed through the native API too", async () => {
    const sbx = await Sandbox.create({ ...opts, timeoutMs: 600_000, lifecycle: { onTimeout: "pause" } });
    const native = async (method = "GET", body?: unknown) => {
      const res = await fetch(
        `${s.url}/v1/sandboxes/${sbx.sandboxId}${body === undefined ? "" : "/lifecycle"}`,
        {
          method,
          headers: { authorization: `Bearer ${s.key}`, "content-type": "application/json" },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        },
      );
      assert.equal(res.status, 200, await res.clone().text());
      return ((await res.json()) as { lifecycle: { expiresAt: string | null; onExpire: string } }).lifecycle;
    };
    const l = await native();
    assert.equal(l.onExpire, "stop");
    const info = await Sandbox.getInfo(sbx.sandboxId, opts);
    assert.equal(Date.parse(l.expiresAt!), info.endAt.getTime(), "one deadline, two views");
    assert.ok(Math.abs(info.endAt.getTime() - (Date.now() + 600_000)) < 30_000);
    // Changed natively: E2B sees the new end and the new action.
    const changed = await native("PATCH", { expiresInSeconds: 3_600, onExpire: "delete" });
    const after = await Sandbox.getInfo(sbx.sandboxId, opts);
    assert.equal(after.endAt.getTime(), Date.parse(changed.expiresAt!));
    assert.ok(after.endAt.getTime() > Date.now() + 3_000_000);
    assert.equal(after.lifecycle?.onTimeout, "kill");
    // Changed through E2B: the native record follows.
    await sbx.setTimeout(120_000);
    const back = await native();
    assert.ok(Math.abs(Date.parse(back.expiresAt!) - (Date.now() + 120_000)) < 30_000);
    // A pause clears the deadline natively; E2B's endAt is then the pause time.
    await sbx.pause();
    assert.equal((await native()).expiresAt, null);
    await sbx.kill();
  });
});
