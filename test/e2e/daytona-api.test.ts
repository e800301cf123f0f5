import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import {
  type CreateSandboxFromSnapshotParams,
  Daytona,
  DaytonaAuthenticationError,
  DaytonaError,
  DaytonaNotFoundError,
  DaytonaValidationError,
  type ListSandboxesQuery,
  type Sandbox,
} from "@daytonaio/sdk";
import { eventually, type MovedReaper, movedReaper, startTestStack, type TestStack } from "./harness.js";

/** Every sandbox a test creates, deleted at the end whatever happened. */
const created: Sandbox[] = [];
const tag = randomBytes(4).toString("hex");

describe("Daytona control API with the real @daytonaio/sdk 0.218.0", () => {
  let s: TestStack;
  let daytona: Daytona;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "2" });
    daytona = new Daytona({ apiKey: s.key, apiUrl: `${s.url}/api` });
  });
  after(async () => {
    for (const sb of created) await sb.delete().catch(() => undefined);
    await daytona?.[Symbol.asyncDispose]();
    await s?.close();
  });

  async function make(params: CreateSandboxFromSnapshotParams = {}): Promise<Sandbox> {
    const sb = await daytona.create(params, { timeout: 120 });
    created.push(sb);
    return sb;
  }

  test("create with name, labels, env and intervals; get by id and name; DTO fields", async () => {
    const name = `box-${tag}`;
    const sb = await make({
      name,
      labels: { team: "core", suite: tag },
      envVars: { MY_VAR: "hello-env" },
      autoStopInterval: 30,
      autoArchiveInterval: 120,
    });
    assert.equal(sb.state, "started");
    assert.equal(sb.name, name);
    assert.deepEqual(sb.labels, { team: "core", suite: tag, "code-toolbox-language": "python" });
    assert.equal(sb.autoStopInterval, 30);
    assert.equal(sb.autoArchiveInterval, 120);
    assert.ok((sb.autoDeleteInterval ?? 0) < 0, "default autoDelete is 'never'");
    assert.deepEqual(sb.env, { MY_VAR: "hello-env" });
    assert.equal(sb.toolboxProxyUrl, `${s.url}/toolbox`);
    const byId = await daytona.get(sb.id);
    const byName = await daytona.get(name);
    assert.equal(byId.id, sb.id);
    assert.equal(byName.id, sb.id);
    assert.equal(byName.state, "started");
    // The sandbox env is really the sandbox's.
    const r = await sb.process.executeCommand("echo $MY_VAR");
    assert.equal(r.result.trim(), "hello-env");
    await assert.rejects(daytona.get(`missing-${tag}`), (e: unknown) => e instanceof DaytonaNotFoundError);
  });

  test("list: label filter (single and AND), no match, limit 1 paging yields each once", async () => {
    const a = await make({ labels: { suite: tag, list: "yes", color: "red" } });
    const b = await make({ labels: { suite: tag, list: "yes", color: "blue" } });
    const ids = async (q: ListSandboxesQuery) => {
      const out: string[] = [];
      for await (const sb of daytona.list(q)) out.push(sb.id);
      return out;
    };
    assert.deepEqual((await ids({ labels: { list: "yes" } })).sort(), [a.id, b.id].sort());
    assert.deepEqual(await ids({ labels: { list: "yes", color: "red" } }), [a.id]);
    assert.deepEqual(await ids({ labels: { list: "no-such" } }), []);
    const paged = await ids({ labels: { list: "yes" }, limit: 1 });
    assert.equal(paged.length, 2);
    assert.deepEqual([...paged].sort(), [a.id, b.id].sort());
    // Raw: items carry toolboxProxyUrl but no env; nextCursor is null on the last page.
    const page = await s.json<{ items: Record<string, unknown>[]; nextCursor: string | null }>(
      `/api/sandbox?limit=1&labels=${encodeURIComponent(JSON.stringify({ list: "yes" }))}`,
    );
    assert.equal(page.status, 200);
    assert.equal(page.body.items.length, 1);
    assert.equal(page.body.items[0]?.env, undefined);
    assert.equal(page.body.items[0]?.toolboxProxyUrl, `${s.url}/toolbox`);
    assert.equal(typeof page.body.nextCursor, "string");
    const rest = await s.json<{ items: { id: string }[]; nextCursor: string | null }>(
      `/api/sandbox?limit=1&cursor=${page.body.nextCursor}&labels=${encodeURIComponent(JSON.stringify({ list: "yes" }))}`,
    );
    assert.equal(rest.body.items.length, 1);
    assert.equal(rest.body.nextCursor, null);
  });

  test("stop → stopped (toolbox refused) → start → started with the filesystem kept; archive → start", async () => {
    const sb = await make({ labels: { suite: tag } });
    await sb.process.executeCommand("echo kept > /tmp/marker");
    await sb.stop();
    assert.equal(sb.state, "stopped");
    assert.equal((await daytona.get(sb.id)).state, "stopped");
    await assert.rejects(sb.process.executeCommand("true"), (e: unknown) => e instanceof DaytonaError);
    await sb.start();
    assert.equal(sb.state, "started");
    assert.equal((await sb.process.executeCommand("cat /tmp/marker")).result.trim(), "kept");
    // Archive needs a stopped sandbox.
    await assert.rejects(sb.archive(), (e: unknown) => e instanceof DaytonaError && e.statusCode === 409);
    await sb.stop();
    await sb.archive();
    assert.equal(sb.state, "archived");
    assert.equal((await daytona.get(sb.id)).state, "archived");
    // A real archive: a signed snapshot in archive storage, the sandbox off its host.
    const native = await s.json<{ state: string }>(`/v1/sandboxes/${sb.id}`);
    assert.equal(native.body.state, "archived");
    await sb.start();
    assert.equal(sb.state, "started");
    assert.equal((await sb.process.executeCommand("cat /tmp/marker")).result.trim(), "kept");
  });

  test("intervals (autodelete -1, autostop 0) and labels persist", async () => {
    const sb = await make({ labels: { suite: tag, old: "x" } });
    await sb.setAutostopInterval(0);
    await sb.setAutoArchiveInterval(60);
    await sb.setAutoDeleteInterval(-1);
    await sb.setLabels({ suite: tag, fresh: "y" });
    const got = await daytona.get(sb.id);
    assert.equal(got.autoStopInterval, 0);
    assert.equal(got.autoArchiveInterval, 60);
    assert.equal(got.autoDeleteInterval, -1);
    assert.deepEqual(got.labels, { suite: tag, fresh: "y" });
    await sb.setAutoDeleteInterval(5);
    assert.equal((await daytona.get(sb.id)).autoDeleteInterval, 5);
    const bad = await s.json(`/api/sandbox/${sb.id}/autostop/-5`, { method: "POST" });
    assert.equal(bad.status, 400);
    assert.equal((bad.body as { source: string }).source, "DAYTONA_API");
  });

  test("preview link: token opens it, the API key alone does not; a closed port is 502 from the proxy", async () => {
    const sb = await make({ labels: { suite: tag } });
    await sb.process.executeCommand(
      "mkdir -p /tmp/www && echo preview-ok > /tmp/www/index.html && " +
        "(setsid nohup python3 -m http.server 8123 --directory /tmp/www >/dev/null 2>&1 &)",
    );
    const link = await sb.getPreviewLink(8123);
    assert.match(link.url, /^http:\/\//);
    assert.equal(typeof link.token, "string");
    const body = await eventually(async () => {
      const r = await fetch(link.url, { headers: { "x-daytona-preview-token": link.token } }).catch(
        () => undefined,
      );
      return r?.status === 200 ? r.text() : undefined;
    }, 30_000);
    assert.equal(body.trim(), "preview-ok");
    const viaQuery = await fetch(`${link.url}index.html?DAYTONA_SANDBOX_AUTH_KEY=${link.token}`);
    assert.equal(viaQuery.status, 200);
    assert.equal((await viaQuery.text()).trim(), "preview-ok");
    const noToken = await fetch(link.url, { headers: { authorization: `Bearer ${s.key}` } });
    assert.equal(noToken.status, 401);
    await noToken.text();
    const closed = await sb.getPreviewLink(8999);
    const r = await fetch(closed.url, { headers: { "x-daytona-preview-token": closed.token } });
    assert.equal(r.status, 502);
    const err = (await r.json()) as { source: string; statusCode: number };
    assert.equal(err.source, "DAYTONA_PROXY");
    assert.equal(err.statusCode, 502);
  });

  test("delete → 404 and no longer listed; an ephemeral one stopped is deleted by the reaper", async () => {
    const sb = await make({ labels: { suite: tag, del: "me" } });
    await sb.delete(60, true);
    await assert.rejects(daytona.get(sb.id), (e: unknown) => e instanceof DaytonaNotFoundError);
    const left: string[] = [];
    for await (const x of daytona.list({ labels: { del: "me" } })) left.push(x.id);
    assert.deepEqual(left, []);

    const eph = await make({ ephemeral: true, labels: { suite: tag } });
    assert.equal(eph.autoDeleteInterval, 0);
    assert.equal(eph.autoStopInterval, 15);
    await eph.stop();
    assert.ok(["stopped", "destroyed"].includes(eph.state ?? ""), eph.state);
    // The stack's scheduler reaps every second on real time: deleteOnStop is due at once.
    await eventually(() => isGone(daytona, eph.id), 30_000);
  });

  test("a page of more than a few reads the native list: every live sandbox once, with its intervals", async () => {
    // Earlier tests left at least six sandboxes: more than native.ts PER_ID_MAX.
    const all: Sandbox[] = [];
    for await (const x of daytona.list({ labels: { suite: tag } })) all.push(x);
    assert.ok(all.length > 4, `${all.length} sandboxes`);
    assert.equal(new Set(all.map((x) => x.id)).size, all.length);
    for (const x of all) {
      assert.equal(typeof x.autoStopInterval, "number", x.id);
      assert.equal(typeof x.autoArchiveInterval, "number", x.id);
      assert.equal(typeof x.lastActivityAt, "string", x.id);
      const one = await daytona.get(x.id);
      assert.deepEqual(
        [x.state, x.autoStopInterval, x.autoArchiveInterval, x.autoDeleteInterval],
        [one.state, one.autoStopInterval, one.autoArchiveInterval, one.autoDeleteInterval],
      );
    }
  });

  test("bad input: 400 with a Daytona error body; a wrong key is 401", async () => {
    for (const [body, what] of [
      [{ volumes: [{ volumeId: "v", mountPath: "/m" }] }, /volumes/],
      [{ buildInfo: { dockerfileContent: "FROM x" } }, /buildInfo|image/],
      [{ gpu: 1 }, /GPU/],
      [{ autoStopInterval: -1 }, /autoStopInterval/],
      [{ labels: { a: 1 } }, /labels/],
      [{ name: "bad name!" }, /name/],
    ] as const) {
      const r = await s.json<Record<string, unknown>>("/api/sandbox", {
        method: "POST",
        body: JSON.stringify(body),
      });
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.statusCode, 400);
      assert.equal(r.body.code, "BAD_REQUEST");
      assert.equal(r.body.source, "DAYTONA_API");
      assert.match(String(r.body.message), what);
    }
    const notJson = await s.api("/api/sandbox", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{",
    });
    assert.equal(notJson.status, 400);
    assert.equal(((await notJson.json()) as { source: string }).source, "DAYTONA_API");
    const badList = await s.json<Record<string, unknown>>("/api/sandbox?labels=not-json");
    assert.equal(badList.status, 400);
    await assert.rejects(
      daytona.create({ image: "python:3.12" }),
      (e: unknown) => e instanceof DaytonaValidationError,
    );
    const wrong = new Daytona({ apiKey: "dnah_wrong_key_0000000000", apiUrl: `${s.url}/api` });
    try {
      await assert.rejects(wrong.get("anything"), (e: unknown) => e instanceof DaytonaAuthenticationError);
    } finally {
      await wrong[Symbol.asyncDispose]();
    }
    const unknownRoute = await s.json<Record<string, unknown>>("/api/no-such-route");
    assert.equal(unknownRoute.status, 404);
    assert.equal(unknownRoute.body.source, "DAYTONA_API");
  });
});

/** Whether Daytona answers 404 for the sandbox (the SDK's not-found). */
async function isGone(daytona: Daytona, id: string): Promise<boolean> {
  return daytona.get(id).then(
    () => false,
    (e: unknown) => e instanceof DaytonaNotFoundError,
  );
}

type NativeLifecycle = {
  type: string;
  autoStopMinutes: number;
  autoArchiveDays: number;
  autoDeleteDays: number;
  clock: string;
  deleteOnStop: boolean;
};

describe("Daytona lifecycle is the native one, enforced by the scheduler's reaper", () => {
  let s: TestStack;
  let daytona: Daytona;
  /** The scheduler's reaper with a clock the test moves (the stack's own reaps on real time). */
  let reaper: MovedReaper;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    daytona = new Daytona({ apiKey: s.key, apiUrl: `${s.url}/api` });
    reaper = movedReaper(s);
  });
  after(async () => {
    for (const sb of created) await sb.delete().catch(() => undefined);
    await daytona?.[Symbol.asyncDispose]();
    await reaper?.close();
    await s?.close();
  });

  const nativeLifecycle = async (id: string) => {
    const r = await s.json<{ state: string; lifecycle: NativeLifecycle }>(`/v1/sandboxes/${id}`);
    assert.equal(r.status, 200);
    const { type, autoStopMinutes, autoArchiveDays, autoDeleteDays, clock, deleteOnStop } = r.body.lifecycle;
    return { type, autoStopMinutes, autoArchiveDays, autoDeleteDays, clock, deleteOnStop };
  };

  test("intervals set through the SDK read back through the native API, and a native PATCH through the SDK", async () => {
    const sb = await daytona.create(
      { autoStopInterval: 30, autoArchiveInterval: 120, autoDeleteInterval: 2880, labels: { reap: tag } },
      { timeout: 120 },
    );
    created.push(sb);
    assert.deepEqual(await nativeLifecycle(sb.id), {
      type: "persistent",
      autoStopMinutes: 30,
      autoArchiveDays: 120 / 1440,
      autoDeleteDays: 2,
      clock: "last_activity",
      deleteOnStop: false,
    });
    // Tagged with its organization: a list page is one native ListSandboxes by that tag.
    const meta = await s.json<{ metadata: Record<string, string> }>(`/v1/sandboxes/${sb.id}`);
    assert.equal(meta.body.metadata["dnah.daytona.org"], sb.organizationId);
    await sb.setAutoDeleteInterval(0);
    await sb.setAutoArchiveInterval(0);
    assert.deepEqual(await nativeLifecycle(sb.id), {
      type: "persistent",
      autoStopMinutes: 30,
      // 0 is Daytona's "the maximum": 30 days.
      autoArchiveDays: 30,
      autoDeleteDays: 0,
      clock: "last_activity",
      deleteOnStop: true,
    });
    await sb.setAutoDeleteInterval(-1);
    assert.equal((await nativeLifecycle(sb.id)).deleteOnStop, false);

    const patched = await s.json(`/v1/sandboxes/${sb.id}/lifecycle`, {
      method: "PATCH",
      body: JSON.stringify({ autoStopMinutes: 42, autoDeleteDays: 0.5 }),
    });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    await sb.refreshData();
    assert.equal(sb.autoStopInterval, 42);
    assert.equal(sb.autoArchiveInterval, 43_200);
    assert.equal(sb.autoDeleteInterval, 720);
    // Lists read the same record.
    const listed: Sandbox[] = [];
    for await (const x of daytona.list({ labels: { reap: tag } })) listed.push(x);
    assert.deepEqual(
      listed.map((x) => [x.id, x.autoStopInterval, x.autoDeleteInterval]),
      [[sb.id, 42, 720]],
    );
  });

  test("the reaper stops an idle sandbox (SDK reads stopped, start resumes it with its files), archives it later; autostop 0 never stops; autoDelete deletes a stopped one", async () => {
    const labels = { reap: tag, idle: "yes" };
    const idle = await daytona.create({ autoStopInterval: 1, labels }, { timeout: 120 });
    created.push(idle);
    const never = await daytona.create({ autoStopInterval: 0, labels }, { timeout: 120 });
    created.push(never);
    const doomed = await daytona.create(
      { autoStopInterval: 0, autoDeleteInterval: 5, labels },
      { timeout: 120 },
    );
    created.push(doomed);
    await idle.process.executeCommand("echo kept > /tmp/marker");
    await doomed.stop();
    // Not idle long enough yet: a pass leaves them alone.
    reaper.skewMs = 0;
    await reaper.runOnce();
    assert.equal((await daytona.get(idle.id)).state, "started");

    reaper.skewMs = 2 * 60_000;
    const pass = await reaper.runOnce();
    assert.ok(pass.stop >= 1, JSON.stringify(pass));
    assert.equal((await s.json<{ state: string }>(`/v1/sandboxes/${idle.id}`)).body.state, "paused");
    await idle.refreshData();
    assert.equal(idle.state, "stopped");
    assert.equal((await daytona.get(never.id)).state, "started");
    // A stopped-by-the-reaper sandbox is listed as stopped too (the filter follows the native state).
    const stopped: string[] = [];
    for await (const x of daytona.list({ labels, states: ["stopped"] } as ListSandboxesQuery))
      stopped.push(x.id);
    assert.deepEqual(stopped.sort(), [idle.id, doomed.id].sort());
    await idle.start();
    assert.equal(idle.state, "started");
    assert.equal((await idle.process.executeCommand("cat /tmp/marker")).result.trim(), "kept");

    // Eight days on: idle again → stopped, then (stopped past autoArchive, 7 days) archived;
    // doomed (stopped past autoDelete, 5 min) deleted: Daytona's not-found.
    reaper.skewMs = 8 * 24 * 60 * 60_000;
    await reaper.runOnce();
    await reaper.runOnce();
    await idle.refreshData();
    assert.equal(idle.state, "archived");
    assert.equal((await s.json<{ state: string }>(`/v1/sandboxes/${idle.id}`)).body.state, "archived");
    assert.ok(await isGone(daytona, doomed.id), "autoDelete deleted the stopped sandbox");
    assert.equal((await daytona.get(never.id)).state, "started");
    // An archived one starts again (restored from archive storage) with its files.
    await idle.start(120);
    assert.equal((await idle.process.executeCommand("cat /tmp/marker")).result.trim(), "kept");
  });

  test("ephemeral: stopped through the SDK, deleted by the reaper's next pass", async () => {
    const eph = await daytona.create({ ephemeral: true, labels: { reap: tag } }, { timeout: 120 });
    created.push(eph);
    assert.equal(eph.autoDeleteInterval, 0);
    assert.equal((await nativeLifecycle(eph.id)).deleteOnStop, true);
    await eph.stop();
    reaper.skewMs = 0;
    await reaper.runOnce();
    // This reaper or the stack's (every second) has deleted it.
    await eventually(() => isGone(daytona, eph.id), 30_000);
    assert.equal((await s.api(`/v1/sandboxes/${eph.id}`)).status, 404);
  });
});
