import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Sandbox, SandboxNotFoundError } from "e2b";
import { startTestStack, type TestStack } from "./harness.js";

const tag = randomBytes(4).toString("hex");

/**
 * E2B snapshots and fork through the real, unmodified `e2b` SDK (2.51.0, which has
 * `createSnapshot`, `listSnapshots`, `deleteSnapshot`, `fork` and `Sandbox.create(snapshotId)`),
 * on the jail runtime: a snapshot holds disk and share; processes start again after a restore.
 */
describe("e2b SDK snapshots and fork", () => {
  let s: TestStack;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
  let sbx: Sandbox;
  const made: string[] = [];

  const run = async (sb: Sandbox, cmd: string) => (await sb.commands.run(cmd)).stdout.trim();

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
    sbx = await Sandbox.create({ ...opts, timeoutMs: 600_000 });
    await sbx.files.write("/home/user/keep.txt", "home-data\n");
    await sbx.commands.run("echo share-data > /mnt/dnah-share/keep.txt");
  });
  after(async () => {
    for (const id of made) await Sandbox.kill(id, opts).catch(() => undefined);
    await s?.close();
  });

  let snapshotId = "";

  test("createSnapshot answers an id and the name; listSnapshots finds it, filters and pages", async () => {
    const info = await sbx.createSnapshot({ ...opts, name: `e2b-${tag}` });
    assert.match(info.snapshotId, /^snap_[a-z0-9]{20}$/);
    assert.deepEqual(info.names, [`e2b-${tag}`]);
    snapshotId = info.snapshotId;
    const unnamed = await Sandbox.createSnapshot(sbx.sandboxId, opts);
    assert.deepEqual(unnamed.names, []);

    const mine = await Sandbox.listSnapshots({ ...opts, sandboxId: sbx.sandboxId }).nextItems();
    assert.deepEqual(mine.map((x) => x.snapshotId).sort(), [snapshotId, unnamed.snapshotId].sort());
    const byName = await Sandbox.listSnapshots({ ...opts, name: `e2b-${tag}` }).nextItems();
    assert.deepEqual(
      byName.map((x) => x.snapshotId),
      [snapshotId],
    );
    // One per page: two pages, newest first, then no more.
    const pager = Sandbox.listSnapshots({ ...opts, sandboxId: sbx.sandboxId, limit: 1 });
    const first = await pager.nextItems();
    assert.equal(first.length, 1);
    assert.equal(pager.hasNext, true);
    const second = await pager.nextItems();
    assert.equal(second.length, 1);
    assert.equal(pager.hasNext, false);
    assert.deepEqual([first[0]?.snapshotId, second[0]?.snapshotId], [unnamed.snapshotId, snapshotId]);

    assert.equal(await Sandbox.deleteSnapshot(unnamed.snapshotId, opts), true);
    assert.equal(await Sandbox.deleteSnapshot(unnamed.snapshotId, opts), false);
    // The source is still running.
    assert.equal(await run(sbx, "cat /home/user/keep.txt"), "home-data");
  });

  test("Sandbox.create(snapshot id or name) restores it: files survive, new identity, own token", async () => {
    await sbx.files.write("/home/user/after.txt", "after\n");
    for (const ref of [snapshotId, `e2b-${tag}`]) {
      const clone = await Sandbox.create(ref, { ...opts, timeoutMs: 300_000 });
      made.push(clone.sandboxId);
      assert.notEqual(clone.sandboxId, sbx.sandboxId);
      assert.equal(await clone.files.read("/home/user/keep.txt"), "home-data\n");
      assert.equal(await run(clone, "cat /mnt/dnah-share/keep.txt"), "share-data");
      assert.equal(await run(clone, "echo $E2B_SANDBOX_ID"), clone.sandboxId);
      assert.equal(await clone.files.exists("/home/user/after.txt"), false);
      await clone.files.write("/home/user/keep.txt", "clone\n");
      assert.equal(await sbx.files.read("/home/user/keep.txt"), "home-data\n");
      const info = await clone.getInfo();
      assert.equal(info.state, "running");
      await clone.kill();
    }
  });

  test("fork: two running clones that diverge and do not share random state; the source keeps running", async () => {
    const forks = await sbx.fork({ ...opts, count: 2, timeoutMs: 300_000 });
    assert.equal(forks.length, 2);
    const clones = forks.map((f) => {
      assert.ok(f instanceof Sandbox, String(f));
      made.push(f.sandboxId);
      return f;
    });
    const [a, b] = clones as [Sandbox, Sandbox];
    assert.notEqual(a.sandboxId, b.sandboxId);
    for (const c of clones) {
      assert.equal(await c.files.read("/home/user/keep.txt"), "home-data\n");
      assert.equal(await run(c, "echo $E2B_SANDBOX_ID"), c.sandboxId);
    }
    await a.files.write("/home/user/keep.txt", "from-a\n");
    await b.commands.run("echo from-b > /home/user/keep.txt");
    assert.equal(await a.files.read("/home/user/keep.txt"), "from-a\n");
    assert.equal(await b.files.read("/home/user/keep.txt"), "from-b\n");
    assert.equal(await sbx.files.read("/home/user/keep.txt"), "home-data\n");
    const random = "head -c16 /dev/urandom | od -An -tx1";
    assert.notEqual(await run(a, random), await run(b, random));
    assert.equal(await sbx.isRunning(), true);
    for (const c of clones) await c.kill();
  });

  test("errors the SDK's way: unknown sandbox for fork and createSnapshot, unknown snapshot to delete", async () => {
    await assert.rejects(Sandbox.fork("nosuchsandbox", opts), SandboxNotFoundError);
    await assert.rejects(Sandbox.createSnapshot("nosuchsandbox", opts), SandboxNotFoundError);
    assert.equal(await Sandbox.deleteSnapshot("snap_00000000000000000000", opts), false);
    // Neither a template nor a snapshot: the template error stands.
    await assert.rejects(Sandbox.create(`nothing-${tag}`, opts), /Template nothing-/);
    // Count out of bounds is the server's 400, shown by the SDK.
    await assert.rejects(
      Sandbox.fork(sbx.sandboxId, { ...opts, count: 17 }),
      /400: 'count' must be from 1 to 16/,
    );
  });

  test("a deleted snapshot no longer restores", async () => {
    assert.equal(await Sandbox.deleteSnapshot(snapshotId, opts), true);
    await assert.rejects(Sandbox.create(snapshotId, opts), /not found/i);
  });
});
