import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { SandboxService } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { pageSnapshots, parseSnapshotQuery } from "../src/compat/e2b/snapshot-query.js";
import { classifyUpstream } from "../src/errors.js";
import type { Gateway } from "../src/index.js";
import { keyStatus } from "../src/rpc/list-snapshot-keys.js";
import { restoreSemantics } from "../src/rpc/snapshot-view.js";
import { forkCount } from "../src/rpc/validate.js";
import { freshDb, startGateway, type TestDb } from "./helpers.js";

const FIXED_KEY = "gateway-snap-key-0123456789";

describe("snapshot routes (scheduler and snapshot service unreachable)", () => {
  let t: TestDb;
  let gw: Gateway;
  const auth = { authorization: `Bearer ${FIXED_KEY}` };
  const json = { ...auth, "content-type": "application/json" };

  before(async () => {
    t = await freshDb("gw_snap");
    gw = await startGateway(t.db, { apiKey: FIXED_KEY });
  });
  after(async () => {
    await gw.close();
    await t.drop();
  });

  async function call(path: string, init: RequestInit = {}) {
    const res = await fetch(gw.url + path, init);
    const text = await res.text();
    return {
      status: res.status,
      body: text === "" ? undefined : (JSON.parse(text) as Record<string, unknown>),
    };
  }

  it("401s every native snapshot route without a key", async () => {
    for (const [method, path] of [
      ["GET", "/v1/snapshot-keys"],
      ["GET", "/v1/snapshots"],
      ["GET", "/v1/snapshots/snap_x"],
      ["DELETE", "/v1/snapshots/snap_x"],
      ["POST", "/v1/snapshots/snap_x/restore"],
      ["POST", "/v1/sandboxes/abc/snapshot"],
      ["POST", "/v1/sandboxes/abc/fork"],
    ] as const) {
      const r = await call(path, { method });
      assert.equal(r.status, 401, `${method} ${path}`);
      assert.equal(r.body?.code, "unauthenticated");
    }
  });

  it("400s bad input before any upstream call", async () => {
    const cases: [string, string, unknown, RegExp][] = [
      ["POST", "/v1/sandboxes/abc/fork", { count: 0 }, /'count' must be an integer from 1 to 16/],
      ["POST", "/v1/sandboxes/abc/fork", { count: 17 }, /from 1 to 16/],
      ["POST", "/v1/sandboxes/abc/fork", { count: "2" }, /from 1 to 16/],
      ["POST", "/v1/sandboxes/abc/fork", { clones: 2 }, /unknown field 'clones'/],
      ["POST", "/v1/sandboxes/abc/snapshot", { name: "a b" }, /invalid snapshot name/],
      ["POST", "/v1/sandboxes/abc/snapshot", { metadata: { a: 1 } }, /'metadata\.a' must be a string/],
      [
        "POST",
        "/v1/snapshots/snap_x/restore",
        { envVars: { "1x": "y" } },
        /not a valid environment variable/,
      ],
      ["GET", "/v1/snapshots?owner=me", undefined, /unknown query parameter 'owner'/],
      ["GET", "/v1/snapshots/-bad", undefined, /invalid snapshot id or name/],
    ];
    for (const [method, path, body, message] of cases) {
      const r = await call(path, {
        method,
        headers: body === undefined ? auth : json,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      assert.equal(r.status, 400, `${method} ${path} ${JSON.stringify(r.body)}`);
      assert.equal(r.body?.code, "invalid_argument");
      assert.match(String(r.body?.message), message);
    }
  });

  it("is 503 unavailable when the scheduler or snapshot service is down", async () => {
    for (const [method, path, body] of [
      ["POST", "/v1/sandboxes/abc/snapshot", { name: "n1" }],
      ["POST", "/v1/sandboxes/abc/fork", { count: 2 }],
      ["GET", "/v1/snapshots", undefined],
      ["GET", "/v1/snapshots?sandboxId=abc", undefined],
      ["GET", "/v1/snapshots/snap_x", undefined],
      ["DELETE", "/v1/snapshots/snap_x", undefined],
      ["POST", "/v1/snapshots/snap_x/restore", {}],
    ] as const) {
      const r = await call(path, {
        method,
        headers: body === undefined ? auth : json,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      assert.equal(r.status, 503, `${method} ${path}`);
      assert.match(String(r.body?.message), /^scheduler unavailable/);
    }
    const keys = await call("/v1/snapshot-keys", { headers: auth });
    assert.equal(keys.status, 503);
    assert.deepEqual(keys.body, { code: "unavailable", message: "snapshot service unavailable; retry" });
  });

  it("answers the Connect RPCs through the same table", async () => {
    const client = createClient(
      SandboxService,
      createConnectTransport({ baseUrl: gw.url, httpVersion: "1.1", useBinaryFormat: true }),
    );
    const headers = { "x-api-key": FIXED_KEY };
    const unavailable = [
      () => client.snapshotSandbox({ sandboxId: "abc" }, { headers }),
      () => client.restoreSnapshot({ snapshotId: "snap_x" }, { headers }),
      () => client.forkSandbox({ sandboxId: "abc", count: 3 }, { headers }),
      () => client.getSnapshot({ snapshotId: "snap_x" }, { headers }),
      () => client.listSnapshots({}, { headers }),
      () => client.deleteSnapshot({ snapshotId: "snap_x" }, { headers }),
      () => client.listSnapshotKeys({}, { headers }),
    ];
    for (const c of unavailable) {
      await assert.rejects(c(), (err) => {
        assert.ok(err instanceof ConnectError);
        assert.equal(err.code, Code.Unavailable, err.message);
        return true;
      });
    }
    await assert.rejects(client.forkSandbox({ sandboxId: "abc", count: 17 }, { headers }), (err) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.InvalidArgument);
      assert.match(err.rawMessage, /count: expected 1 to 16, got 17/);
      return true;
    });
    await assert.rejects(client.listSnapshotKeys({}), (err) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.Unauthenticated);
      return true;
    });
  });

  it("answers E2B snapshot and fork routes E2B's way", async () => {
    const e2b = { "x-api-key": FIXED_KEY, "content-type": "application/json" };
    const fork = await call("/sandboxes/abc/fork", {
      method: "POST",
      headers: e2b,
      body: JSON.stringify({ count: 17 }),
    });
    assert.equal(fork.status, 400);
    assert.equal(fork.body?.code, 400);
    const noKey = await call("/snapshots");
    assert.equal(noKey.status, 401);
    const badLimit = await call("/snapshots?limit=0", { headers: e2b });
    assert.equal(badLimit.status, 400);
    // Not even spelled like a snapshot id: unknown, which the SDK turns into `false`.
    const del = await call(`/templates/${encodeURIComponent("a b")}`, { method: "DELETE", headers: e2b });
    assert.equal(del.status, 404);
    assert.equal(del.body?.code, 404);
    const down = await call("/sandboxes/abc/snapshots", { method: "POST", headers: e2b, body: "{}" });
    assert.equal(down.status, 503);
  });
});

describe("snapshot domain rules", () => {
  it("says what a restore brings back", () => {
    assert.match(restoreSemantics(true), /^memory, disk and share: processes continue/);
    assert.match(restoreSemantics(false), /^disk and share only: processes start again/);
  });

  it("names key states", () => {
    assert.equal(keyStatus({ active: true, retiredAt: undefined }), "active");
    assert.equal(keyStatus({ active: false, retiredAt: undefined }), "verifying");
    assert.equal(keyStatus({ active: false, retiredAt: timestampFromMs(1) }), "retired");
  });

  it("bounds fork counts (0 is 1)", () => {
    assert.equal(forkCount(0), 1);
    assert.equal(forkCount(16), 16);
    assert.throws(() => forkCount(17), /count: expected 1 to 16/);
  });

  it("classifies a clone's error by its Connect code name", () => {
    assert.deepEqual(classifyUpstream("resource_exhausted", "host full"), {
      kind: "resource_exhausted",
      message: "host full",
    });
    assert.deepEqual(classifyUpstream("failed_precondition", "tampered"), {
      kind: "failed_precondition",
      message: "tampered",
    });
    assert.deepEqual(classifyUpstream("internal", "stack…"), { kind: "internal", message: undefined });
    assert.deepEqual(classifyUpstream("nonsense", "x"), { kind: "internal", message: undefined });
  });

  it("pages E2B snapshot lists newest first, stable across deletes", () => {
    const items = [1, 2, 3, 4, 5].map((i) => ({
      snapshotId: `snap_${i}`,
      name: i % 2 === 0 ? "even" : "",
      createdAtMs: i * 1000,
    }));
    const first = pageSnapshots(items, { name: undefined, limit: 2, after: undefined });
    assert.deepEqual(
      first.page.map((s) => s.snapshotId),
      ["snap_5", "snap_4"],
    );
    assert.ok(first.nextToken);
    const q = parseSnapshotQuery(`/snapshots?limit=2&nextToken=${first.nextToken}`);
    // snap_4 (the cursor) is deleted meanwhile: the next page still starts after it.
    const second = pageSnapshots(
      items.filter((s) => s.snapshotId !== "snap_4"),
      q,
    );
    assert.deepEqual(
      second.page.map((s) => s.snapshotId),
      ["snap_3", "snap_2"],
    );
    const last = pageSnapshots(items, parseSnapshotQuery(`/snapshots?limit=2&nextToken=${second.nextToken}`));
    assert.deepEqual(
      last.page.map((s) => s.snapshotId),
      ["snap_1"],
    );
    assert.equal(last.nextToken, undefined);
    const named = pageSnapshots(items, parseSnapshotQuery("/snapshots?name=even"));
    assert.deepEqual(
      named.page.map((s) => s.snapshotId),
      ["snap_4", "snap_2"],
    );
    assert.throws(() => parseSnapshotQuery("/snapshots?nextToken=zzz"), /nextToken/);
    assert.throws(() => parseSnapshotQuery("/snapshots?limit=101"), /limit/);
  });
});
