import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Sandbox, SandboxError } from "e2b";
import { Sandbox as Sandbox250 } from "e2b-2-50";
import { startTestStack, type TestStack } from "./harness.js";

/** `Sandbox.list` (GET /v2/sandboxes) paging and filters through the real `e2b` SDK. */
describe("e2b SDK: list, paging and filters", () => {
  let s: TestStack;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
  const run = randomBytes(4).toString("hex");
  const ids: string[] = [];

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
    // Sequential, so start times are ordered; the order checks below only rely on that.
    for (let i = 0; i < 5; i++) {
      const sbx = await Sandbox.create({
        ...opts,
        metadata: { run, n: String(i), "odd key&=": i % 2 ? "y es" : "n&o" },
      });
      ids.push(sbx.sandboxId);
    }
    // One paused, one of another run (not listed by the metadata filter).
    assert.equal(await Sandbox.pause(ids[1]!, opts), true);
    ids.push((await Sandbox.create({ ...opts, metadata: { run: "other" } })).sandboxId);
  });
  after(async () => {
    for (const id of ids) await Sandbox.kill(id, opts).catch(() => undefined);
    await s?.close();
  });

  test("the paginator walks every page: 5 sandboxes, limit 2 → pages of 2, 2, 1, newest first", async () => {
    const pager = Sandbox.list({ ...opts, query: { metadata: { run } }, limit: 2 });
    const pages: string[][] = [];
    while (pager.hasNext) {
      pages.push((await pager.nextItems()).map((i) => i.sandboxId));
      assert.ok(pages.length <= 5, "the paginator did not stop");
    }
    assert.deepEqual(
      pages.map((p) => p.length),
      [2, 2, 1],
    );
    assert.deepEqual(pages.flat(), [...ids.slice(0, 5)].reverse());
    assert.equal(pager.nextToken, undefined);
  });

  test("order asc, with state filters", async () => {
    const asc = Sandbox.list({ ...opts, query: { metadata: { run } }, order: "asc", limit: 3 });
    const all: { id: string; state: string }[] = [];
    while (asc.hasNext)
      all.push(...(await asc.nextItems()).map((i) => ({ id: i.sandboxId, state: i.state })));
    assert.deepEqual(
      all.map((i) => i.id),
      ids.slice(0, 5),
    );
    assert.deepEqual(
      all.map((i) => i.state),
      ["running", "paused", "running", "running", "running"],
    );
    const paused = await Sandbox.list({
      ...opts,
      query: { metadata: { run }, state: ["paused"] },
    }).nextItems();
    assert.deepEqual(
      paused.map((i) => i.sandboxId),
      [ids[1]],
    );
    const running = Sandbox.list({ ...opts, query: { metadata: { run }, state: ["running"] }, limit: 1 });
    const runningIds: string[] = [];
    while (running.hasNext) runningIds.push(...(await running.nextItems()).map((i) => i.sandboxId));
    assert.deepEqual(runningIds, [ids[4], ids[3], ids[2], ids[0]]);
  });

  test("metadata filters decode E2B's double encoding", async () => {
    const odd = await Sandbox.list({
      ...opts,
      query: { metadata: { run, "odd key&=": "y es" } },
    }).nextItems();
    assert.deepEqual(odd.map((i) => i.sandboxId).sort(), [ids[1], ids[3]].sort());
    const item = odd.find((i) => i.sandboxId === ids[3])!;
    assert.deepEqual(item.metadata, { run, n: "3", "odd key&=": "y es" });
    assert.equal(item.templateId, "base");
    assert.ok(item.startedAt instanceof Date && item.endAt > item.startedAt);
  });

  test("raw API: X-Next-Token, X-Total-Running, v1 lists running only, bad input is 400", async () => {
    const get = (path: string) => fetch(s.url + path, { headers: { "x-api-key": s.key } });
    const md = encodeURIComponent(`run=${run}`);
    const first = await get(`/v2/sandboxes?metadata=${md}&limit=2`);
    assert.equal(first.status, 200);
    assert.equal(first.headers.get("x-total-running"), "4");
    const token = first.headers.get("x-next-token");
    assert.ok(token, "a next token");
    const second = await get(`/v2/sandboxes?metadata=${md}&limit=2&nextToken=${token}`);
    assert.deepEqual(
      ((await second.json()) as { sandboxID: string }[]).map((i) => i.sandboxID),
      [ids[2], ids[1]],
    );
    const v1 = (await (await get(`/sandboxes?metadata=${md}`)).json()) as {
      sandboxID: string;
      state: string;
    }[];
    assert.deepEqual(v1.map((i) => i.sandboxID).sort(), [ids[0], ids[2], ids[3], ids[4]].sort());
    assert.ok(v1.every((i) => i.state === "running"));
    for (const bad of [
      "limit=0",
      "limit=101",
      "limit=x",
      "state=dead",
      "order=up",
      "nextToken=bm9wZQ",
      "startedAfter=never",
    ]) {
      const r = await get(`/v2/sandboxes?${bad}`);
      assert.equal(r.status, 400, bad);
      const body = (await r.json()) as { code: number; message: string };
      assert.equal(body.code, 400, bad);
      assert.ok(body.message.length > 0);
    }
  });

  test("the SDK surfaces a bad query as a 400 SandboxError; e2b 2.50 lists too", async () => {
    await assert.rejects(Sandbox.list({ ...opts, limit: 500 }).nextItems(), (err: unknown) => {
      assert.ok(err instanceof SandboxError, String(err));
      assert.match(err.message, /^400: 'limit' must be an integer/);
      return true;
    });
    const old = await Sandbox250.list({ ...opts, query: { metadata: { run: "other" } } }).nextItems();
    assert.deepEqual(
      old.map((i) => i.sandboxId),
      [ids[5]],
    );
  });
});
