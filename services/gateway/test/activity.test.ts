import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { createServiceClient, createServiceServer, type Logger, listen, silentLogger } from "@dnah/platform";
import { type RecordActivityRequest, SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import fastify from "fastify";
import { ACTIVITY_ROUTES, activityRule, installActivityRoutes } from "../src/activity-routes.js";
import type { Gateway } from "../src/index.js";
import { ActivityRecorder, MAX_MARKS_PER_CALL } from "../src/sandbox/activity.js";
import { freshDb, startGateway, type TestDb } from "./helpers.js";

/**
 * A real HTTP Connect server standing in for the scheduler's RecordActivity: it records each
 * batch and refuses calls while `failing` is set. (The real scheduler path is covered end to
 * end in test/e2e/lifecycle.test.ts.)
 */
async function standIn() {
  const batches: Map<string, number>[] = [];
  const state = { failing: false };
  const app = await createServiceServer({
    routes: (router) =>
      router.service(SchedulerService, {
        async recordActivity(req: RecordActivityRequest) {
          if (state.failing) throw new ConnectError("database down", Code.Unavailable);
          batches.push(new Map(req.marks.map((m) => [m.sandboxId, m.at ? timestampMs(m.at) : -1])));
          return { recorded: req.marks.length };
        },
      }),
    logger: silentLogger(),
  });
  const url = await listen(app, "127.0.0.1", 0);
  return { app, url, batches, state, client: createServiceClient(SchedulerService, url) };
}

/** A logger whose warnings the test can read. */
function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = silentLogger();
  logger.warn = ((obj: Record<string, unknown>, msg: string) => {
    lines.push({ ...obj, msg });
  }) as Logger["warn"];
  return { logger, lines };
}

describe("ActivityRecorder (coalescer)", () => {
  let s: Awaited<ReturnType<typeof standIn>>;
  let clock: number;
  const now = () => clock;

  before(async () => {
    s = await standIn();
  });
  after(async () => {
    await s.app.close();
  });
  beforeEach(() => {
    s.batches.length = 0;
    s.state.failing = false;
    clock = 1_000_000;
  });

  const recorder = (logger: Logger = silentLogger(), maxEntries?: number) =>
    new ActivityRecorder({ scheduler: s.client, logger, flushMs: 60_000, now, maxEntries });

  it("keeps the latest time per sandbox and sends one batch per flush", async () => {
    const r = recorder();
    r.touch("sbx-a");
    clock += 500;
    r.touch("sbx-b");
    clock += 500;
    r.touch("sbx-a");
    assert.equal(r.pending, 2);
    await r.flush();
    assert.equal(s.batches.length, 1);
    assert.deepEqual(
      s.batches[0],
      new Map([
        ["sbx-a", 1_001_000],
        ["sbx-b", 1_000_500],
      ]),
    );
    assert.equal(r.pending, 0);
    await r.flush(); // nothing pending: no call
    assert.equal(s.batches.length, 1);
  });

  it("ignores ids that cannot name a sandbox (they would make the scheduler refuse the batch)", async () => {
    const r = recorder();
    r.touch("");
    r.touch("../etc");
    r.touch("x".repeat(200));
    r.touch("ok-1");
    await r.flush();
    assert.deepEqual([...s.batches[0]!.keys()], ["ok-1"]);
  });

  it("a failed flush keeps its marks, merged with newer ones, and the next flush sends them", async () => {
    const { logger, lines } = capturingLogger();
    const r = recorder(logger);
    r.touch("sbx-a");
    r.touch("sbx-b");
    s.state.failing = true;
    await r.flush();
    assert.equal(s.batches.length, 0);
    assert.equal(r.pending, 2);
    assert.ok(lines.some((l) => String(l.msg).includes("keeping the marks")));
    clock += 1_000;
    r.touch("sbx-a"); // newer than the kept mark: wins
    r.touch("sbx-c");
    s.state.failing = false;
    await r.flush();
    assert.deepEqual(
      s.batches[0],
      new Map([
        ["sbx-a", 1_001_000],
        ["sbx-b", 1_000_000],
        ["sbx-c", 1_001_000],
      ]),
    );
    assert.equal(r.pending, 0);
  });

  it("close() flushes what is pending, and the timer flushes on its own", async () => {
    const r = recorder();
    r.touch("sbx-close");
    await r.close();
    assert.deepEqual([...s.batches[0]!.keys()], ["sbx-close"]);

    const timed = new ActivityRecorder({
      scheduler: s.client,
      logger: silentLogger(),
      flushMs: 20,
    });
    timed.start();
    timed.touch("sbx-timer");
    while (!s.batches.some((b) => b.has("sbx-timer"))) await new Promise((res) => setTimeout(res, 10));
    assert.equal(timed.pending, 0);
    await timed.close();
  });

  it("is bounded: sandboxes beyond maxEntries are dropped with a warning; known ones still move", async () => {
    const { logger, lines } = capturingLogger();
    const r = recorder(logger, 2);
    r.touch("a1");
    r.touch("a2");
    r.touch("a3");
    clock += 5;
    r.touch("a1");
    assert.equal(r.pending, 2);
    await r.flush();
    assert.deepEqual(
      s.batches[0],
      new Map([
        ["a1", 1_000_005],
        ["a2", 1_000_000],
      ]),
    );
    assert.ok(lines.some((l) => l.dropped === 1 && String(l.msg).includes("activity map full")));
  });

  it("a held sandbox counts as active at every flush until released", async () => {
    const r = recorder();
    const release = r.hold("long-call");
    await r.flush();
    clock += 60_000;
    await r.flush();
    assert.equal(s.batches.length, 2);
    assert.equal(s.batches[1]!.get("long-call"), 1_060_000);
    clock += 1_000;
    release();
    release(); // idempotent
    await r.flush();
    assert.equal(s.batches[2]!.get("long-call"), 1_061_000); // the release is a mark too
    clock += 60_000;
    await r.flush();
    assert.equal(s.batches.length, 3); // released: nothing more
  });

  it("splits a batch larger than the scheduler takes per call", async () => {
    const r = recorder();
    for (let i = 0; i <= MAX_MARKS_PER_CALL; i++) r.touch(`s${i}`);
    await r.flush();
    assert.deepEqual(
      s.batches.map((b) => b.size),
      [MAX_MARKS_PER_CALL, 1],
    );
  });
});

describe("ACTIVITY_ROUTES", () => {
  let t: TestDb;
  let gw: Gateway;

  before(async () => {
    t = await freshDb("gw_activity");
    gw = await startGateway(t.db, { apiKey: "gateway-activity-key-0123" });
  });
  after(async () => {
    await gw.close();
    await t.drop();
  });

  it("names only routes the gateway serves (every served route is classified, or it would not start)", () => {
    for (const key of Object.keys(ACTIVITY_ROUTES)) {
      const [method, url] = key.split(" ", 2) as [string, string];
      if (method === "PROXY" || method === "*") continue; // hooks and wildcards, below
      assert.ok(gw.app.hasRoute({ method: method as "GET", url }), `${key} is not a route`);
    }
    assert.ok(gw.app.hasRoute({ method: "GET", url: "/preview/*" }));
    assert.ok(gw.app.hasRoute({ method: "POST", url: "/toolbox/:sandboxId/process/execute" }));
  });

  it("looks rules up by method and URL: HEAD as GET, wildcards below a prefix", () => {
    assert.deepEqual(activityRule("POST", "/v1/sandboxes/:id/exec"), { param: "id" });
    assert.equal(activityRule("GET", "/v1/sandboxes/:id"), false);
    assert.deepEqual(activityRule("HEAD", "/v1/sandboxes/:id/files"), { param: "id" });
    assert.deepEqual(activityRule("DELETE", "/toolbox/:sandboxId/files"), { param: "sandboxId" });
    assert.equal(activityRule("PATCH", "/preview/*"), "handler");
    assert.equal(activityRule("GET", "/v1/nothing"), undefined);
  });

  it("refuses to register a route the table does not classify", async () => {
    const app = fastify();
    installActivityRoutes(app, { touch() {}, hold: () => () => {} });
    assert.throws(
      () => app.get("/v1/sandboxes/:id/exec-unclassified", async () => "x"),
      /not in ACTIVITY_ROUTES/,
    );
    await app.close();
  });
});
