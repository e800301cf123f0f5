import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { createServiceClient, createServiceServer, type Db, listen } from "@dnah/platform";
import { SchedulerService, TemplateBuildStatus } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { BuildTemplateResponseSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import {
  type BuildTemplateRequest,
  type BuildTemplateResponse,
  TemplateStepKind,
  VmmService,
} from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { createScheduler, type Scheduler } from "../src/index.js";
import { MAX_LOG_LINES } from "../src/template-builds.js";
import { connectError, logger, migratedDb, testConfig, waitFor } from "./helpers.js";

type Reply = MessageInitShape<typeof BuildTemplateResponseSchema>;

/**
 * TEST DOUBLE for a host's vmm, as far as templates go: BuildTemplate streams what the test's
 * `onBuild` yields (and records the request and whether the stream was cancelled);
 * DeleteTemplate and CreateVm record their calls. The real vmm's builds are covered end to
 * end in test/e2e/templates.test.ts.
 */
interface BuildDouble {
  url: string;
  builds: BuildTemplateRequest[];
  cancelled: string[];
  deleted: string[];
  created: { sandboxId: string; templateId: string }[];
  onBuild: (req: BuildTemplateRequest, signal: AbortSignal) => AsyncIterable<Reply>;
  close(): Promise<void>;
}

const line = (message: string): Reply => ({ log: { at: timestampNow(), level: "info", message } });
const result = (cached: number, built: number): Reply => ({
  result: {
    buildKey: "k".repeat(64),
    cachedSteps: cached,
    builtSteps: built,
    sizeBytes: 1234n,
    durationMs: 5,
  },
});

async function* succeed(): AsyncIterable<Reply> {
  yield line("step 1/1: RUN true");
  yield result(0, 1);
}

/** Never ends until cancelled. */
async function* hang(_req: BuildTemplateRequest, signal: AbortSignal): AsyncIterable<Reply> {
  yield line("step 1/1: RUN sleep 60");
  await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
  throw new ConnectError("cancelled", Code.Canceled);
}

async function startBuildDouble(): Promise<BuildDouble> {
  const d: Omit<BuildDouble, "url" | "close"> = {
    builds: [],
    cancelled: [],
    deleted: [],
    created: [],
    onBuild: succeed,
  };
  const app = await createServiceServer({
    logger,
    routes: (router) =>
      router.service(VmmService, {
        async *buildTemplate(req, ctx) {
          d.builds.push(req);
          ctx.signal.addEventListener("abort", () => d.cancelled.push(req.templateId), { once: true });
          yield* d.onBuild(req, ctx.signal) as AsyncIterable<BuildTemplateResponse>;
        },
        deleteTemplate(req) {
          d.deleted.push(req.templateId);
          return {};
        },
        createVm(req) {
          d.created.push({ sandboxId: req.sandboxId, templateId: req.templateId });
          return {
            vm: { sandboxId: req.sandboxId, templateId: req.templateId, runtime: "double", bootMs: 1 },
          };
        },
        deleteVm() {
          return {};
        },
      }),
  });
  const url = await listen(app, "127.0.0.1", 0);
  return Object.assign(d, { url, close: () => app.close() });
}

const ALICE = "key-alice";
const BOB = "key-bob";

/** A tar's worth of bytes and its hash (the scheduler stores bytes, it does not read tars). */
function context(size = 2048) {
  const data = randomBytes(size);
  return { data, sha256: createHash("sha256").update(data).digest("hex") };
}

const run = (command: string) => ({ kind: TemplateStepKind.RUN, args: [command] });

describe("template builds (scheduler, real Postgres, vmm test doubles)", () => {
  let db: Db;
  let drop: () => Promise<void>;
  let scheduler: Scheduler;
  let client: Client<typeof SchedulerService>;
  let h1: BuildDouble;
  let h2: BuildDouble;

  /** Both hosts build the same way (the test does not care which one placement picks). */
  const onBuild = (fn: BuildDouble["onBuild"]) => {
    h1.onBuild = fn;
    h2.onBuild = fn;
  };
  const lastBuild = () => [...h1.builds, ...h2.builds].at(-1);
  const waitBuild = async (templateId: string, buildId: string, owner = ALICE) => {
    let last: Awaited<ReturnType<typeof client.getTemplateBuild>> | undefined;
    await waitFor(
      `build ${buildId} to end`,
      async () => {
        last = await client.getTemplateBuild({ templateId, buildId, owner });
        return last.build?.status !== TemplateBuildStatus.BUILDING;
      },
      10_000,
    );
    return last!;
  };

  before(async () => {
    ({ db, drop } = await migratedDb("postgres"));
    h1 = await startBuildDouble();
    h2 = await startBuildDouble();
    scheduler = createScheduler(testConfig({ templateContextMaxBytes: 64 * 1024 }), { db, logger });
    client = createServiceClient(SchedulerService, await scheduler.start());
  });
  after(async () => {
    await scheduler?.close();
    await h1?.close();
    await h2?.close();
    await drop?.();
  });

  it("stores build contexts by their sha256, checked and bounded", async () => {
    const c = context();
    assert.equal((await client.hasTemplateFiles({ sha256: c.sha256 })).present, false);
    await assert.rejects(
      client.putTemplateFiles({ sha256: "0".repeat(64), data: c.data }),
      connectError(Code.InvalidArgument, new RegExp(`sha256 mismatch: .* hash to ${c.sha256}`)),
    );
    await assert.rejects(
      client.putTemplateFiles({ sha256: "xyz", data: c.data }),
      connectError(Code.InvalidArgument, /64 hex digits/),
    );
    const big = context(64 * 1024 + 1);
    await assert.rejects(
      client.putTemplateFiles(big),
      connectError(Code.ResourceExhausted, /65537 bytes; the limit is 65536/),
    );
    await client.putTemplateFiles(c);
    await client.putTemplateFiles({ sha256: c.sha256.toUpperCase(), data: c.data }); // twice: a no-op
    assert.equal((await client.hasTemplateFiles({ sha256: c.sha256 })).present, true);
    const { rows } = await db.query<{ size: string }>("SELECT size FROM template_files WHERE sha256 = $1", [
      c.sha256,
    ]);
    assert.deepEqual(rows, [{ size: "2048" }]);
  });

  it("refuses bad builds before starting anything", async () => {
    const bad = async (req: Parameters<typeof client.buildTemplate>[0], code: Code, message: RegExp) =>
      assert.rejects(client.buildTemplate(req), connectError(code, message));
    await bad({ name: "py", owner: "" }, Code.InvalidArgument, /owner .* is required/);
    await bad({ name: "Py", owner: ALICE }, Code.InvalidArgument, /name 'Py' must be 1-63 of a-z/);
    await bad(
      { name: "py", owner: ALICE, aliases: ["py"] },
      Code.InvalidArgument,
      /alias 'py' is given twice/,
    );
    await bad(
      { name: "py", owner: ALICE, baseTemplateId: "nope" },
      Code.NotFound,
      /base template 'nope' not found/,
    );
    await bad({ name: "py", owner: ALICE, baseTemplateId: "py" }, Code.NotFound, /base template 'py'/);
    await bad(
      { name: "py", owner: ALICE, steps: [{ kind: TemplateStepKind.WORKDIR, args: ["/a/../b"] }] },
      Code.InvalidArgument,
      /steps\[0\]: the workdir must not contain '\.\.'/,
    );
    await bad(
      { name: "py", owner: ALICE, steps: [{ kind: TemplateStepKind.RUN, args: ["id", "Bad User"] }] },
      Code.InvalidArgument,
      /steps\[0\]: 'Bad User' is not a user name/,
    );
    await bad(
      {
        name: "py",
        owner: ALICE,
        steps: [{ kind: TemplateStepKind.COPY, args: ["a", "/a", "user", "999"], filesHash: "a".repeat(64) }],
      },
      Code.InvalidArgument,
      /steps\[0\]: the mode must be octal/,
    );
    const missing = "a".repeat(64);
    await bad(
      {
        name: "py",
        owner: ALICE,
        steps: [{ kind: TemplateStepKind.COPY, args: ["a", "/a"], filesHash: missing }],
      },
      Code.NotFound,
      new RegExp(`build context ${missing} is not uploaded`),
    );
    await bad({ name: "base", owner: ALICE }, Code.PermissionDenied, /template 'base' is built in/);
    await bad({ name: "py", owner: ALICE, aliases: ["code-interpreter-v1"] }, Code.AlreadyExists, /is taken/);
    await bad({ name: "py", owner: ALICE }, Code.ResourceExhausted, /no host is registered/);
    const { rows } = await db.query("SELECT id FROM templates WHERE NOT builtin");
    assert.deepEqual(rows, [], "nothing was recorded");
  });

  it("builds on a host holding the base, streams its log, and the template becomes ready", async () => {
    await client.registerHost({
      hostId: "h1",
      vmmUrl: h1.url,
      runtime: "jail",
      capacitySandboxes: 10,
      templates: ["base"],
    });
    await client.registerHost({ hostId: "h2", vmmUrl: h2.url, runtime: "jail", capacitySandboxes: 10 });
    const c = context();
    await client.putTemplateFiles(c);
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    h1.onBuild = async function* () {
      yield line("step 1/3: ENV");
      await gate;
      yield line("step 2/3: COPY");
      yield result(0, 3);
    };
    const res = await client.buildTemplate({
      name: "py",
      aliases: ["python-env"],
      owner: ALICE,
      steps: [
        { kind: TemplateStepKind.ENV, args: ["A", "1"] },
        { kind: TemplateStepKind.COPY, args: ["app.py", "/app/app.py"], filesHash: c.sha256 },
        run("echo hi"),
      ],
      start: { command: "python3 -m http.server 8080", readyPort: 8080 },
      memoryMib: 1024,
    });
    const build = res.build!;
    assert.match(build.buildId, /^bld_[a-z0-9]{20}$/);
    assert.equal(build.status, TemplateBuildStatus.BUILDING);
    assert.equal(build.hostId, "h1", "the host that holds the base");
    assert.equal(res.template?.status, "building");
    assert.equal(res.template?.owner, ALICE);
    assert.equal(res.template?.public, false);
    // Not startable before its first build is ready.
    await assert.rejects(
      client.createSandbox({ templateId: "python-env", owner: ALICE }),
      connectError(Code.FailedPrecondition, /^template 'py' has no successful build yet$/),
    );
    // One build at a time.
    await assert.rejects(
      client.buildTemplate({ name: "py", owner: ALICE }),
      connectError(Code.FailedPrecondition, new RegExp(`being built \\(build ${build.buildId}\\)`)),
    );
    // The log so far, before the build ends.
    await waitFor("the first log lines", async () => {
      const g = await client.getTemplateBuild({ templateId: "py", buildId: build.buildId, owner: ALICE });
      return g.logs.some((l) => l.message === "step 1/3: ENV");
    });
    release();
    const done = await waitBuild("py", build.buildId);
    assert.equal(done.build?.status, TemplateBuildStatus.READY);
    assert.equal(done.build?.result?.builtSteps, 3);
    assert.equal(done.build?.result?.sizeBytes, 1234n);
    assert.ok(done.build?.finishedAt);
    assert.deepEqual(
      done.logs.map((l) => l.message),
      [
        "building on host 'h1'",
        "step 1/3: ENV",
        "step 2/3: COPY",
        "ready: 0 step(s) from the cache, 3 built",
      ],
    );
    assert.equal(done.nextLogsOffset, 4);
    const tail = await client.getTemplateBuild({
      templateId: "py",
      buildId: build.buildId,
      owner: ALICE,
      logsOffset: 3,
    });
    assert.deepEqual(
      tail.logs.map((l) => l.message),
      ["ready: 0 step(s) from the cache, 3 built"],
    );
    assert.equal(tail.nextLogsOffset, 4);

    // What the host was asked: the steps, the start command and the context tar's bytes.
    const req = h1.builds.at(-1)!;
    assert.equal(req.templateId, "py");
    assert.equal(req.baseTemplateId, "base");
    assert.deepEqual(
      req.steps.map((s) => [s.kind, s.args]),
      [
        [TemplateStepKind.ENV, ["A", "1"]],
        [TemplateStepKind.COPY, ["app.py", "/app/app.py"]],
        [TemplateStepKind.RUN, ["echo hi"]],
      ],
    );
    assert.equal(req.start?.readyPort, 8080);
    assert.deepEqual(Object.keys(req.files), [c.sha256]);
    assert.ok(Buffer.from(req.files[c.sha256]!).equals(c.data));

    const t = (await client.getTemplate({ templateId: "python-env", owner: ALICE })).template!;
    assert.equal(t.templateId, "py");
    assert.equal(t.status, "ready");
    assert.equal(t.readyBuildId, build.buildId);
    assert.equal(t.memoryMib, 1024);
    assert.equal(t.cpuCount, 1, "the base's");
    assert.equal(t.baseTemplateId, "base");
  });

  it("keeps private templates and their builds from other keys", async () => {
    const builds = await db.query<{ id: string }>("SELECT id FROM template_builds WHERE template_id = 'py'");
    const buildId = builds.rows[0]!.id;
    await assert.rejects(client.getTemplate({ templateId: "py", owner: BOB }), connectError(Code.NotFound));
    await assert.rejects(client.getTemplate({ templateId: "py" }), connectError(Code.NotFound));
    await assert.rejects(
      client.createSandbox({ templateId: "py", owner: BOB }),
      connectError(Code.NotFound, /^template 'py' not found$/),
    );
    await assert.rejects(
      client.getTemplateBuild({ templateId: "py", buildId, owner: BOB }),
      connectError(Code.NotFound),
    );
    await assert.rejects(
      client.cancelTemplateBuild({ templateId: "py", buildId, owner: BOB }),
      connectError(Code.NotFound),
    );
    await assert.rejects(
      client.buildTemplate({ name: "mine", owner: BOB, baseTemplateId: "py" }),
      connectError(Code.NotFound, /base template 'py' not found/),
    );
    await assert.rejects(
      client.buildTemplate({ name: "py", owner: BOB }),
      connectError(Code.AlreadyExists, /template name 'py' is taken/),
    );
    await assert.rejects(
      client.buildTemplate({ name: "other", aliases: ["python-env"], owner: BOB }),
      connectError(Code.AlreadyExists, /name 'python-env' is taken by another template/),
    );
    await assert.rejects(
      client.deleteTemplate({ templateId: "py", owner: BOB }),
      connectError(Code.NotFound),
    );
    const ids = async (owner: string) =>
      (await client.listTemplates({ owner })).templates.map((t) => t.templateId);
    assert.deepEqual(await ids(ALICE), ["base", "code-interpreter", "py"]);
    assert.deepEqual(await ids(BOB), ["base", "code-interpreter"]);
    assert.deepEqual(await ids(""), ["base", "code-interpreter"]);
    const base = (await client.listTemplates({ owner: BOB })).templates[0]!;
    assert.equal(base.builtin, true);
    assert.equal(base.public, true);
    assert.equal(base.status, "ready");
  });

  it("starts sandboxes of a built template only on a host that holds it", async () => {
    // The build host holds it as soon as the build is ready, before its heartbeat says so.
    const held = await db.query<{ id: string; templates: string[] }>(
      "SELECT id, templates FROM hosts ORDER BY id",
    );
    assert.deepEqual(held.rows, [
      { id: "h1", templates: ["base", "py"] },
      { id: "h2", templates: [] },
    ]);
    // A heartbeat read before the build's last write lands after it: the host keeps it.
    await client.heartbeat({ hostId: "h1", runningSandboxes: 0, templates: ["base"] });
    const kept = await db.query<{ templates: string[] }>("SELECT templates FROM hosts WHERE id = 'h1'");
    assert.deepEqual(kept.rows[0]?.templates.sort(), ["base", "py"]);
    // A minute after the build, a heartbeat that no longer lists it (the host lost it): no
    // host holds it.
    await db.query(
      "UPDATE template_builds SET finished_at = now() - interval '2 minutes' WHERE template_id = 'py'",
    );
    await client.heartbeat({ hostId: "h1", runningSandboxes: 0, templates: ["base"] });
    await assert.rejects(
      client.createSandbox({ templateId: "py", owner: ALICE }),
      connectError(Code.ResourceExhausted, /2 without the template/),
    );
    await client.heartbeat({ hostId: "h1", runningSandboxes: 0, templates: ["base", "py"] });
    await client.heartbeat({ hostId: "h2", runningSandboxes: 0 });
    for (let i = 0; i < 3; i++) {
      const sb = (await client.createSandbox({ templateId: "python-env", owner: ALICE })).sandbox!;
      assert.equal(sb.hostId, "h1");
      assert.equal(sb.templateId, "py");
      assert.equal(sb.memoryMib, 1024);
    }
    assert.equal(h1.created.filter((c) => c.templateId === "py").length, 3);
    // Built-in templates are only preferred where they are held: with h1 draining, h2 (which
    // does not report base) gets it.
    await client.setHostDraining({ hostId: "h1", draining: true });
    const b = (await client.createSandbox({ templateId: "base", owner: BOB })).sandbox!;
    assert.equal(b.hostId, "h2");
    await client.setHostDraining({ hostId: "h1", draining: false });
  });

  it("rebuilds on the host that holds it, a failed rebuild keeps the last good build", async () => {
    const before = (await client.getTemplate({ templateId: "py", owner: ALICE })).template!;
    // h2 now holds base too and is emptier; the rebuild still goes where its layers are.
    await client.heartbeat({ hostId: "h2", runningSandboxes: 0, templates: ["base"] });
    h1.onBuild = async function* () {
      yield line("step 1/1: RUN false");
      throw new ConnectError("step 1 (RUN false) exited with status 1", Code.FailedPrecondition);
    };
    const res = await client.buildTemplate({ name: "py", owner: ALICE, steps: [run("false")], public: true });
    assert.equal(res.build?.hostId, "h1");
    assert.equal(res.template?.status, "ready", "still ready: its last good build");
    const done = await waitBuild("py", res.build!.buildId);
    assert.equal(done.build?.status, TemplateBuildStatus.ERROR);
    assert.equal(done.build?.reason, "step 1 (RUN false) exited with status 1");
    assert.equal(done.logs.at(-1)?.level, "error");
    const t = (await client.getTemplate({ templateId: "py", owner: ALICE })).template!;
    assert.equal(t.status, "ready");
    assert.equal(t.readyBuildId, before.readyBuildId);
    assert.equal(t.latestBuildId, res.build!.buildId);
    assert.equal(t.memoryMib, 1024, "the ready build's size");
    // Public now: Bob sees it and may start it, but not change or delete it.
    assert.equal((await client.getTemplate({ templateId: "py", owner: BOB })).template?.templateId, "py");
    await assert.rejects(
      client.deleteTemplate({ templateId: "py", owner: BOB }),
      connectError(Code.PermissionDenied, /belongs to another API key/),
    );
    await assert.rejects(
      client.deleteTemplate({ templateId: "base", owner: ALICE }),
      connectError(Code.PermissionDenied, /built in/),
    );
  });

  it("cancels a running build quickly; the template keeps its last good build", async () => {
    onBuild(hang);
    const res = await client.buildTemplate({ name: "py", owner: ALICE, steps: [run("sleep 60")] });
    const buildId = res.build!.buildId;
    assert.equal(res.build?.hostId, "h1", "the only host that holds it");
    await waitFor("the build to reach the host", () => h1.builds.at(-1)?.steps[0]?.args[0] === "sleep 60");
    const started = Date.now();
    const cancelled = await client.cancelTemplateBuild({ templateId: "py", buildId, owner: ALICE });
    assert.ok(Date.now() - started < 5_000);
    assert.equal(cancelled.build?.status, TemplateBuildStatus.CANCELLED);
    assert.equal(cancelled.build?.reason, "cancelled");
    await waitFor("the host to see the stream cancelled", () => h1.cancelled.includes("py"));
    const t = (await client.getTemplate({ templateId: "py", owner: ALICE })).template!;
    assert.equal(t.status, "ready");
    assert.notEqual(t.readyBuildId, buildId);
    await assert.rejects(
      client.cancelTemplateBuild({ templateId: "py", buildId, owner: ALICE }),
      connectError(Code.FailedPrecondition, /is already cancelled/),
    );
    // A successful rebuild retires the older copy another host still reports.
    await client.heartbeat({ hostId: "h2", runningSandboxes: 0, templates: ["base", "py"] });
    onBuild(async function* () {
      yield result(1, 0);
    });
    const again = await client.buildTemplate({ name: "py", owner: ALICE, steps: [run("echo 2")] });
    assert.equal((await waitBuild("py", again.build!.buildId)).build?.status, TemplateBuildStatus.READY);
    const [built, other] = again.build?.hostId === "h1" ? [h1, h2] : [h2, h1];
    await waitFor("the other host to forget its older copy", () => other.deleted.includes("py"));
    assert.ok(!built.deleted.includes("py"));
  });

  it("reserves a build (E2B's builder) and starts it later by its id", async () => {
    onBuild(succeed);
    const r1 = await client.buildTemplate({ name: "e2b-style", owner: ALICE, reserve: true });
    assert.equal(r1.build?.status, TemplateBuildStatus.WAITING);
    assert.equal(r1.build?.hostId, "");
    assert.equal(r1.template?.status, "building");
    await assert.rejects(
      client.buildTemplate({ name: "e2b-style", owner: ALICE, reserve: true, steps: [run("true")] }),
      connectError(Code.InvalidArgument, /takes its steps when it starts/),
    );
    // A second reservation supersedes the first.
    const r2 = await client.buildTemplate({ name: "e2b-style", owner: ALICE, reserve: true });
    const first = await client.getTemplateBuild({
      templateId: "e2b-style",
      buildId: r1.build!.buildId,
      owner: ALICE,
    });
    assert.equal(first.build?.status, TemplateBuildStatus.CANCELLED);
    assert.equal(first.build?.reason, `superseded by build ${r2.build!.buildId}`);
    await assert.rejects(
      client.buildTemplate({
        name: "e2b-style",
        owner: ALICE,
        buildId: r1.build!.buildId,
        steps: [run("true")],
      }),
      connectError(Code.FailedPrecondition, /is cancelled, not waiting/),
    );
    await assert.rejects(
      client.buildTemplate({
        name: "e2b-style",
        owner: BOB,
        buildId: r2.build!.buildId,
        steps: [run("true")],
      }),
      connectError(Code.AlreadyExists, /is taken/),
    );
    await assert.rejects(
      client.buildTemplate({ name: "e2b-style", owner: ALICE, buildId: "bld_nope", steps: [run("true")] }),
      connectError(Code.NotFound, /build 'bld_nope' of template 'e2b-style' not found/),
    );
    const started = await client.buildTemplate({
      name: "e2b-style",
      owner: ALICE,
      buildId: r2.build!.buildId,
      steps: [run("true")],
    });
    assert.equal(started.build?.buildId, r2.build!.buildId);
    assert.equal(started.build?.status, TemplateBuildStatus.BUILDING);
    const done = await waitBuild("e2b-style", r2.build!.buildId);
    assert.equal(done.build?.status, TemplateBuildStatus.READY);
    const t = (await client.getTemplate({ templateId: "e2b-style", owner: ALICE })).template!;
    assert.equal(t.readyBuildId, r2.build!.buildId);
    assert.equal(t.memoryMib, 512, "the base's, not the reservation's placeholder");
    // A reservation nobody starts can be cancelled; the template keeps its good build.
    const r3 = await client.buildTemplate({ name: "e2b-style", owner: ALICE, reserve: true });
    const c = await client.cancelTemplateBuild({
      templateId: "e2b-style",
      buildId: r3.build!.buildId,
      owner: ALICE,
    });
    assert.equal(c.build?.status, TemplateBuildStatus.CANCELLED);
    assert.equal(
      (await client.getTemplate({ templateId: "e2b-style", owner: ALICE })).template?.status,
      "ready",
    );
  });

  it("bounds a build's log and pages through it", async () => {
    onBuild(async function* () {
      for (let i = 0; i < MAX_LOG_LINES + 50; i++) yield line(`line ${i}`);
      yield line(`x${"y".repeat(20_000)}`);
      yield result(0, 1);
    });
    const res = await client.buildTemplate({ name: "noisy", owner: ALICE, steps: [run("yes | head")] });
    const buildId = res.build!.buildId;
    const done = await waitBuild("noisy", buildId);
    assert.equal(done.build?.status, TemplateBuildStatus.READY);
    assert.equal(done.logs.length, 1_000, "one page");
    let offset = 0;
    const all: string[] = [];
    for (;;) {
      const page = await client.getTemplateBuild({
        templateId: "noisy",
        buildId,
        owner: ALICE,
        logsOffset: offset,
      });
      if (page.logs.length === 0) break;
      all.push(...page.logs.map((l) => l.message));
      offset = page.nextLogsOffset;
    }
    assert.equal(all.length, MAX_LOG_LINES + 1);
    assert.match(all[0]!, /^building on host 'h[12]'$/);
    assert.equal(all[MAX_LOG_LINES - 1], `line ${MAX_LOG_LINES - 2}`);
    assert.match(all[MAX_LOG_LINES]!, /^log truncated: only the first 10000 lines are kept$/);
  });

  it("deletes a template: its rows go, its hosts forget it, its sandboxes stay", async () => {
    const sb = (await client.createSandbox({ templateId: "py", owner: ALICE })).sandbox!;
    const forgotten = () => [h1, h2].map((h) => h.deleted.filter((t) => t === "py").length);
    const before = forgotten();
    await client.deleteTemplate({ templateId: "py", owner: ALICE });
    const listed = await db.query("SELECT id FROM hosts WHERE 'py' = ANY(templates)");
    assert.deepEqual(listed.rows, [], "no host is placed on for it any more");
    await assert.rejects(client.getTemplate({ templateId: "py", owner: ALICE }), connectError(Code.NotFound));
    const left = await db.query("SELECT 1 FROM template_builds WHERE template_id = 'py'");
    assert.equal(left.rows.length, 0);
    // Both hosts built it at some point or report it: both are asked to forget it.
    await waitFor("both hosts to forget it", () => forgotten().every((n, i) => n === before[i]! + 1));
    assert.equal((await client.getSandbox({ sandboxId: sb.sandboxId })).sandbox?.templateId, "py");
    // The name is free again, for anyone.
    onBuild(succeed);
    const bob = await client.buildTemplate({ name: "py", owner: BOB });
    assert.equal((await waitBuild("py", bob.build!.buildId, BOB)).build?.status, TemplateBuildStatus.READY);
  });

  it("marks builds whose scheduler went away as interrupted, on close and on start", async () => {
    // A build this scheduler is running when it closes.
    onBuild(hang);
    const res = await client.buildTemplate({ name: "long", owner: ALICE, steps: [run("sleep 60")] });
    await waitFor("the build to reach the host", () => lastBuild()?.templateId === "long");
    await scheduler.close();
    // And one left by a scheduler that died: 'building', untouched for a minute.
    await db.query(
      `INSERT INTO templates (id, owner, cpu_count, memory_mib, builtin, status, latest_build_id)
       VALUES ('orphan', $1, 1, 512, false, 'building', 'bld_orphan00000000000000')`,
      [ALICE],
    );
    await db.query(
      `INSERT INTO template_builds (id, template_id, status, host_id, spec, heartbeat_at)
       VALUES ('bld_orphan00000000000000', 'orphan', 'building', 'h1', '{}', now() - interval '1 minute')`,
    );

    scheduler = createScheduler(testConfig(), { db, logger });
    client = createServiceClient(SchedulerService, await scheduler.start());
    for (const [t, b] of [
      ["orphan", "bld_orphan00000000000000"],
      ["long", res.build!.buildId],
    ] as const) {
      const g = await client.getTemplateBuild({ templateId: t, buildId: b, owner: ALICE });
      assert.equal(g.build?.status, TemplateBuildStatus.ERROR, t);
      assert.equal(g.build?.reason, "interrupted (scheduler restarted)", t);
      assert.equal((await client.getTemplate({ templateId: t, owner: ALICE })).template?.status, "error", t);
    }
  });
});
