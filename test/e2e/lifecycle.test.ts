import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Daytona, type Sandbox as DaytonaSandbox } from "@daytonaio/sdk";
import { ACTIVITY_ROUTES, configFromEnv, createGateway } from "@dnah/gateway";
import { createServiceClient, silentLogger } from "@dnah/platform";
import { ExecStreamRequestSchema } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { Sandbox as E2bSandbox } from "e2b";
import WebSocket from "ws";
import { eventually, sandboxClient, startTestStack, type TestStack } from "./harness.js";

type Json = Record<string, unknown>;
const CONNECT = "POST /dnah.sandbox.v1.SandboxService";

/**
 * Lifecycle through the real stack: presets and explicit values, PATCH, the event log, and
 * activity tracking — every route of the gateway's ACTIVITY_ROUTES table is called once and
 * must move (counted) or leave (not counted) the sandbox's `lastActivityAt`.
 */
describe("lifecycle: presets, updates, events and activity tracking", () => {
  let s: TestStack;

  before(async () => {
    s = await startTestStack({ DNAH_ACTIVITY_FLUSH_MS: "100", DNAH_POOL_SIZE: "3" });
  });
  after(async () => {
    await s?.close();
  });

  const post = (path: string, body: unknown = {}) =>
    s.json(path, { method: "POST", body: JSON.stringify(body) });
  const created = async (body: unknown = {}) => {
    const r = await post("/v1/sandboxes", body);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body as Json;
  };
  const del = (id: string) => s.api(`/v1/sandboxes/${id}`, { method: "DELETE" }).then((r) => r.status);

  /** The lifecycle fields E2B (deadline) and Daytona (clock, delete on stop) use, unset. */
  const NONE = { clock: "state_change", deleteOnStop: false, expiresAt: null, onExpire: "delete" };

  test("the fields the compatibility surfaces map onto: fractional days, clock, delete on stop, a deadline", async () => {
    const sbx = await created({ autoArchiveDays: 120 / 1440, clock: "last_activity", deleteOnStop: true });
    const l = sbx.lifecycle as Json;
    assert.equal(l.autoArchiveDays, 120 / 1440);
    assert.equal(l.clock, "last_activity");
    assert.equal(l.deleteOnStop, true);
    const id = sbx.sandboxId as string;
    const before = Date.now();
    const patched = await s.json<Json>(`/v1/sandboxes/${id}/lifecycle`, {
      method: "PATCH",
      body: JSON.stringify({ expiresInSeconds: 600, onExpire: "stop", deleteOnStop: false }),
    });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    const p = patched.body.lifecycle as Json;
    const at = Date.parse(p.expiresAt as string);
    assert.ok(at >= before + 599_000 && at <= Date.now() + 601_000, String(p.expiresAt));
    assert.deepEqual([p.onExpire, p.deleteOnStop, p.clock], ["stop", false, "last_activity"]);
    // 0 removes the deadline; a pause clears it too.
    const cleared = await s.json<Json>(`/v1/sandboxes/${id}/lifecycle`, {
      method: "PATCH",
      body: JSON.stringify({ expiresInSeconds: 0 }),
    });
    assert.equal((cleared.body.lifecycle as Json).expiresAt, null);
    const ev = await s.json<{ events: Json[] }>(`/v1/sandboxes/${id}/events`);
    assert.match(String(ev.body.events.at(-2)!.detail), /expires_at none -> .*on_expire delete -> stop/);
    assert.equal(await del(id), 204);
  });

  test("presets, explicit values winning, PATCH, and the event log in order", async () => {
    const persistent = await created({});
    assert.deepEqual(persistent.lifecycle, {
      type: "persistent",
      autoStopMinutes: 0,
      autoArchiveDays: 0,
      autoDeleteDays: 0,
      ...NONE,
    });
    assert.equal(typeof persistent.lastActivityAt, "string");
    assert.equal(persistent.archivedAt, null);
    const ephemeral = await created({ type: "ephemeral" });
    assert.deepEqual(ephemeral.lifecycle, {
      type: "ephemeral",
      autoStopMinutes: 15,
      autoArchiveDays: 7,
      autoDeleteDays: 30,
      ...NONE,
    });
    const explicit = await created({ type: "ephemeral", autoStopMinutes: 0, autoDeleteDays: 3 });
    assert.deepEqual(explicit.lifecycle, {
      type: "ephemeral",
      autoStopMinutes: 0,
      autoArchiveDays: 7,
      autoDeleteDays: 3,
      ...NONE,
    });
    const explicitPersistent = await created({ autoStopMinutes: 5 });
    assert.deepEqual(explicitPersistent.lifecycle, {
      type: "persistent",
      autoStopMinutes: 5,
      autoArchiveDays: 0,
      autoDeleteDays: 0,
      ...NONE,
    });

    // Input rules: no coercion, unknown fields and types refused.
    for (const bad of [
      { type: "forever" },
      { autoStopMinutes: "5" },
      { autoStopMinutes: -1 },
      { ttl: 3 },
      { autoArchiveDays: -0.5 },
      { autoDeleteDays: 3651 },
      { clock: "wall" },
      { deleteOnStop: "yes" },
      { onExpire: "pause" },
      { expiresInSeconds: 1.5 },
    ]) {
      const r = await post("/v1/sandboxes", bad);
      assert.equal(r.status, 400, JSON.stringify(bad));
      assert.equal((r.body as Json).code, "invalid_argument");
    }

    const id = persistent.sandboxId as string;
    assert.equal((await post(`/v1/sandboxes/${id}/pause`)).status, 200);
    assert.equal((await post(`/v1/sandboxes/${id}/resume`)).status, 200);
    const patched = await s.json(`/v1/sandboxes/${id}/lifecycle`, {
      method: "PATCH",
      body: JSON.stringify({ autoStopMinutes: 30, autoDeleteDays: 2 }),
    });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    const want = { type: "persistent", autoStopMinutes: 30, autoArchiveDays: 0, autoDeleteDays: 2, ...NONE };
    assert.deepEqual((patched.body as Json).lifecycle, want);
    assert.deepEqual((await s.json<Json>(`/v1/sandboxes/${id}`)).body.lifecycle, want);
    const empty = await s.json(`/v1/sandboxes/${id}/lifecycle`, { method: "PATCH", body: "{}" });
    assert.equal(empty.status, 400);
    const unknown = await s.json(`/v1/sandboxes/${id}/lifecycle`, {
      method: "PATCH",
      body: JSON.stringify({ type: "ephemeral" }),
    });
    assert.equal(unknown.status, 400);

    const ev = await s.json<{ events: Json[] }>(`/v1/sandboxes/${id}/events`);
    assert.equal(ev.status, 200);
    assert.deepEqual(
      ev.body.events.map((e) => [e.kind, e.fromState, e.toState, e.actor]),
      [
        ["created", null, "running", "api"],
        ["paused", "running", "paused", "api"],
        ["resumed", "paused", "running", "api"],
        ["lifecycle_updated", null, null, "api"],
      ],
    );
    const ids = ev.body.events.map((e) => BigInt(e.eventId as string));
    assert.deepEqual(
      ids,
      [...ids].sort((a, b) => (a < b ? -1 : 1)),
    );
    assert.match(String(ev.body.events[3]!.detail), /auto_stop_minutes 0 -> 30/);
    const last = await s.json<{ events: Json[] }>(`/v1/sandboxes/${id}/events?limit=1`);
    assert.deepEqual(
      last.body.events.map((e) => e.kind),
      ["lifecycle_updated"],
    );
    assert.equal((await s.json(`/v1/sandboxes/${id}/events?limit=0`)).status, 400);
    assert.equal((await s.json(`/v1/sandboxes/${id}/events?since=1`)).status, 400);
    assert.equal((await s.json("/v1/sandboxes/nosuchsandbox/events")).status, 404);

    const listed = await s.json<{ sandboxes: Json[] }>("/v1/sandboxes?state=archived");
    assert.equal(listed.status, 200);
    assert.deepEqual(listed.body.sandboxes, []);

    for (const x of [persistent, ephemeral, explicit, explicitPersistent]) await del(x.sandboxId as string);
  });

  test("every route of ACTIVITY_ROUTES moves lastActivityAt (counted) or leaves it (not counted)", async () => {
    const rpc = sandboxClient(s);
    const e2bOpts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
    const daytona = new Daytona({ apiKey: s.key, apiUrl: `${s.url}/api` });
    const nat = (await created({ metadata: { role: "target" } })).sandboxId as string;
    const sentinel = (await created({ metadata: { role: "sentinel" } })).sandboxId as string;
    const e2b = await E2bSandbox.create(e2bOpts);
    const day: DaytonaSandbox = await daytona.create({});
    const cleanup: string[] = [nat, sentinel, e2b.sandboxId, day.id];

    const e2bApi = (path: string, init: RequestInit & { body?: string } = {}) =>
      fetch(s.url + path, {
        ...init,
        headers: {
          "x-api-key": s.key,
          ...(init.body !== undefined ? { "content-type": "application/json" } : {}),
        },
      }).then(async (r) => ({ status: r.status, body: (await r.text()) || "" }));
    const dayApi = (path: string, init: RequestInit & { body?: string } = {}) => s.json(`/api${path}`, init);

    const activityOf = async (id: string): Promise<number> => {
      const r = await s.json<Json>(`/v1/sandboxes/${id}`);
      assert.equal(r.status, 200, `GET ${id}: ${JSON.stringify(r.body)}`);
      return Date.parse(r.body.lastActivityAt as string);
    };
    const allActivity = async (): Promise<Map<string, number>> => {
      const r = await s.json<{ sandboxes: Json[] }>("/v1/sandboxes");
      return new Map(
        r.body.sandboxes.map((x) => [x.sandboxId as string, Date.parse(x.lastActivityAt as string)]),
      );
    };
    /**
     * Every mark made before this call has reached the scheduler once it returns: one flush
     * sends all pending marks together, and the sentinel's own mark is made after them.
     */
    const barrier = async () => {
      const before = await activityOf(sentinel);
      assert.equal((await s.api(`/v1/sandboxes/${sentinel}/metrics`)).status, 200);
      await eventually(async () => (await activityOf(sentinel)) > before, 20_000);
    };

    let snapCounter = 0;
    const snapshotOf = async (id: string): Promise<string> => {
      const r = await post(`/v1/sandboxes/${id}/snapshot`, { name: `walk-${++snapCounter}` });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return ((r.body as Json).snapshot as Json).snapshotId as string;
    };
    const ok = (status: number, want: number | number[], what: string) =>
      assert.ok((Array.isArray(want) ? want : [want]).includes(status), `${what}: status ${status}`);

    const NO_SHA = "0".repeat(64);
    /** The template routes of the three surfaces, each called once with input that builds nothing. */
    const templateSteps = (): Record<string, Step> => {
      const native = (method: string, path: string, want: number[], body?: string) => ({
        run: async () =>
          ok(
            (await s.json(path, { method, ...(body !== undefined ? { body } : {}) })).status,
            want,
            `${method} ${path}`,
          ),
      });
      const e2bT = (method: string, path: string, want: number[], body?: string) => ({
        run: async () =>
          ok(
            (await e2bApi(path, { method, ...(body !== undefined ? { body } : {}) })).status,
            want,
            `e2b ${method} ${path}`,
          ),
      });
      const dayT = (method: string, path: string, want: number[], body?: string) => ({
        run: async () =>
          ok(
            (await dayApi(path, { method, ...(body !== undefined ? { body } : {}) })).status,
            want,
            `daytona ${method} ${path}`,
          ),
      });
      return {
        "POST /v1/templates": native("POST", "/v1/templates", [400], JSON.stringify({ name: "BAD NAME" })),
        "GET /v1/templates": native("GET", "/v1/templates", [200]),
        "GET /v1/templates/:id": native("GET", "/v1/templates/base", [200]),
        "DELETE /v1/templates/:id": native("DELETE", "/v1/templates/no-such-template", [404]),
        "POST /v1/templates/files/:sha256": native(
          "POST",
          `/v1/templates/files/${NO_SHA}`,
          [400],
          "not this",
        ),
        "GET /v1/templates/files/:sha256": native("GET", `/v1/templates/files/${NO_SHA}`, [404]),
        "GET /v1/templates/:id/builds/:buildId": native("GET", "/v1/templates/base/builds/nope", [400, 404]),
        "GET /v1/templates/:id/builds/:buildId/logs": native(
          "GET",
          "/v1/templates/base/builds/nope/logs",
          [400, 404],
        ),
        "POST /v1/templates/:id/builds/:buildId/cancel": native(
          "POST",
          "/v1/templates/base/builds/nope/cancel",
          [400, 404],
        ),
        "POST /v3/templates": e2bT("POST", "/v3/templates", [400], JSON.stringify({ name: "" })),
        "POST /v2/templates/:templateId/builds/:buildId": e2bT(
          "POST",
          "/v2/templates/no-such/builds/nope",
          [400, 404],
          JSON.stringify({ steps: [] }),
        ),
        "GET /templates/:templateId/builds/:buildId/status": e2bT(
          "GET",
          "/templates/no-such/builds/nope/status",
          [400, 404],
        ),
        "GET /templates/:templateId/files/:hash": e2bT(
          "GET",
          `/templates/no-such/files/${NO_SHA}`,
          [400, 404],
        ),
        "PUT /templates/:templateId/files/:hash": e2bT(
          "PUT",
          `/templates/no-such/files/${NO_SHA}`,
          [401, 403],
          "x",
        ),
        "GET /templates/aliases/:alias": e2bT("GET", "/templates/aliases/no-such-template", [404]),
        "POST /templates/tags": e2bT(
          "POST",
          "/templates/tags",
          [400, 404],
          JSON.stringify({ target: "no-such:x", tags: ["y"] }),
        ),
        "DELETE /templates/tags": e2bT(
          "DELETE",
          "/templates/tags",
          [400, 404],
          JSON.stringify({ name: "no-such", tags: ["y"] }),
        ),
        "GET /templates/:templateId/tags": e2bT("GET", "/templates/no-such/tags", [404]),
        "GET /api/sandbox/:idOrName/build-logs-url": dayT("GET", "/sandbox/no-such/build-logs-url", [404]),
        "GET /api/sandbox/:idOrName/build-logs": dayT("GET", "/sandbox/no-such/build-logs", [404]),
        "POST /api/snapshots": dayT("POST", "/snapshots", [400], JSON.stringify({ name: "x" })),
        "GET /api/snapshots": dayT("GET", "/snapshots", [200]),
        "GET /api/snapshots/:id": dayT("GET", "/snapshots/no-such", [404]),
        "DELETE /api/snapshots/:id": dayT("DELETE", "/snapshots/no-such", [404]),
        "POST /api/snapshots/:id/activate": dayT("POST", "/snapshots/no-such/activate", [400, 404]),
        "GET /api/snapshots/:id/build-logs-url": dayT("GET", "/snapshots/no-such/build-logs-url", [404]),
        "GET /api/snapshots/:id/build-logs": dayT("GET", "/snapshots/no-such/build-logs", [404]),
        "GET /api/object-storage/push-access": dayT("GET", "/object-storage/push-access", [200]),
        "* /daytona-storage/*": {
          run: async () =>
            ok((await fetch(`${s.url}/daytona-storage/x`)).status, [400, 401, 403], "daytona storage"),
        },
      };
    };

    /** One request per route. `target` is the sandbox a counted route must move. */
    interface Step {
      target?: string;
      /** The scheduler moves the clock itself (a resume): left out of the unchanged check. */
      resumes?: string;
      run: () => Promise<unknown>;
    }
    /** The chunked upload the share POST step starts and the DELETE step aborts. */
    let walkUploadId: string | undefined;
    const steps: Record<string, Step> = {
      "GET /health": { run: async () => ok((await fetch(`${s.url}/health`)).status, 200, "health") },
      // The API's documents: public, no sandbox.
      "GET /openapi.json": {
        run: async () => ok((await fetch(`${s.url}/openapi.json`)).status, 200, "openapi"),
      },
      "GET /llms.txt": { run: async () => ok((await fetch(`${s.url}/llms.txt`)).status, 200, "llms.txt") },
      "GET /llms-full.txt": {
        run: async () => ok((await fetch(`${s.url}/llms-full.txt`)).status, 200, "llms-full.txt"),
      },

      // native REST
      "POST /v1/sandboxes": {
        run: async () => cleanup.push((await created({})).sandboxId as string),
      },
      "GET /v1/sandboxes": { run: async () => ok((await s.api("/v1/sandboxes")).status, 200, "list") },
      "GET /v1/sandboxes/:id": {
        run: async () => ok((await s.api(`/v1/sandboxes/${nat}`)).status, 200, "get"),
      },
      "DELETE /v1/sandboxes/:id": {
        run: async () => ok(await del((await created({})).sandboxId as string), 204, "delete"),
      },
      "POST /v1/sandboxes/:id/pause": {
        run: async () => ok((await post(`/v1/sandboxes/${nat}/pause`)).status, 200, "pause"),
      },
      // A paused sandbox archived on request: off its host; the resume below restores it.
      "POST /v1/sandboxes/:id/archive": {
        run: async () => {
          const r = await post(`/v1/sandboxes/${nat}/archive`);
          ok(r.status, 200, "archive");
          assert.equal((await s.json<Json>(`/v1/sandboxes/${nat}`)).body.state, "archived");
        },
      },
      "POST /v1/sandboxes/:id/resume": {
        resumes: nat,
        run: async () => ok((await post(`/v1/sandboxes/${nat}/resume`)).status, 200, "resume"),
      },
      "PATCH /v1/sandboxes/:id/lifecycle": {
        run: async () =>
          ok(
            (
              await s.json(`/v1/sandboxes/${nat}/lifecycle`, {
                method: "PATCH",
                body: JSON.stringify({ autoArchiveDays: 9 }),
              })
            ).status,
            200,
            "patch",
          ),
      },
      "GET /v1/sandboxes/:id/events": {
        run: async () => ok((await s.api(`/v1/sandboxes/${nat}/events`)).status, 200, "events"),
      },
      "GET /v1/sandboxes/:id/metrics": {
        target: nat,
        run: async () => ok((await s.api(`/v1/sandboxes/${nat}/metrics`)).status, 200, "metrics"),
      },
      "POST /v1/sandboxes/:id/exec": {
        target: nat,
        run: async () =>
          ok((await post(`/v1/sandboxes/${nat}/exec`, { command: "true" })).status, 200, "exec"),
      },
      "POST /v1/sandboxes/:id/exec/stream": {
        target: nat,
        run: async () => {
          const r = await s.api(`/v1/sandboxes/${nat}/exec/stream`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ command: "echo hi" }),
          });
          ok(r.status, 200, "exec stream");
          await r.text();
        },
      },
      "PUT /v1/sandboxes/:id/files": {
        target: nat,
        run: async () =>
          ok(
            (await s.api(`/v1/sandboxes/${nat}/files?path=a.txt`, { method: "PUT", body: "x" })).status,
            200,
            "put",
          ),
      },
      "GET /v1/sandboxes/:id/files": {
        target: nat,
        run: async () => {
          const r = await s.api(`/v1/sandboxes/${nat}/files?path=a.txt`);
          ok(r.status, 200, "read");
          await r.arrayBuffer();
        },
      },
      "GET /v1/sandboxes/:id/files/list": {
        target: nat,
        run: async () => ok((await s.api(`/v1/sandboxes/${nat}/files/list`)).status, 200, "list files"),
      },
      "GET /v1/sandboxes/:id/files/watch": {
        target: nat,
        run: async () => {
          // Counted once, at start: read the start event, then go away.
          const ac = new AbortController();
          const r = await s.api(`/v1/sandboxes/${nat}/files/watch?path=/tmp`, { signal: ac.signal });
          ok(r.status, 200, "watch");
          const reader = r.body!.getReader();
          const first = new TextDecoder().decode((await reader.read()).value);
          assert.match(first, /event: start/);
          ac.abort();
        },
      },
      "GET /v1/sandboxes/:id/terminal": {
        target: nat,
        run: async () => {
          // A short terminal session: the shell is told to exit, the server says how it ended.
          const ws = new WebSocket(`${s.url.replace(/^http/, "ws")}/v1/sandboxes/${nat}/terminal`, {
            headers: { authorization: `Bearer ${s.key}` },
          });
          const exit = await new Promise<Json>((resolve, reject) => {
            ws.on("open", () => ws.send(Buffer.from("exit 3\n")));
            ws.on("message", (data, binary) => {
              if (!binary) resolve(JSON.parse(String(data)) as Json);
            });
            ws.on("error", reject);
            ws.on("close", () => reject(new Error("terminal closed before its exit frame")));
          });
          assert.deepEqual(exit, { exit: { code: 3 } });
        },
      },
      "POST /v1/sandboxes/:id/snapshot": { target: nat, run: () => snapshotOf(nat) },
      "PUT /v1/sandboxes/:id/share/*": {
        target: nat,
        run: async () =>
          ok(
            (
              await s.api(`/v1/sandboxes/${nat}/share/walk.txt`, {
                method: "PUT",
                body: "x",
                headers: { "content-type": "application/octet-stream" },
              })
            ).status,
            200,
            "share put",
          ),
      },
      "GET /v1/sandboxes/:id/share/*": {
        target: nat,
        run: async () => {
          const r = await s.api(`/v1/sandboxes/${nat}/share/walk.txt`);
          ok(r.status, 200, "share get");
          await r.arrayBuffer();
        },
      },
      "POST /v1/sandboxes/:id/share/*": {
        target: nat,
        run: async () => {
          const r = await s.api(`/v1/sandboxes/${nat}/share/walk-chunked.bin?uploads`, { method: "POST" });
          ok(r.status, 201, "share chunked upload start");
          walkUploadId = ((await r.json()) as { uploadId: string }).uploadId;
        },
      },
      "DELETE /v1/sandboxes/:id/share/*": {
        target: nat,
        run: async () => {
          if (walkUploadId === undefined) {
            const r = await s.api(`/v1/sandboxes/${nat}/share/walk-chunked.bin?uploads`, { method: "POST" });
            walkUploadId = ((await r.json()) as { uploadId: string }).uploadId;
          }
          const r = await s.api(`/v1/sandboxes/${nat}/share/walk-chunked.bin?uploadId=${walkUploadId}`, {
            method: "DELETE",
          });
          walkUploadId = undefined;
          ok(r.status, 204, "share chunked upload abort");
        },
      },
      "POST /v1/sandboxes/:id/fork": {
        target: nat,
        run: async () => {
          const r = await post(`/v1/sandboxes/${nat}/fork`, {});
          ok(r.status, 201, `fork ${JSON.stringify(r.body)}`);
          for (const x of (r.body as { results: { sandbox?: Json }[] }).results)
            if (x.sandbox) await del(x.sandbox.sandboxId as string);
        },
      },
      "GET /v1/snapshots": { run: async () => ok((await s.api("/v1/snapshots")).status, 200, "snapshots") },
      "GET /v1/snapshots/:idOrName": {
        run: async () =>
          ok((await s.api(`/v1/snapshots/${await snapshotOf(sentinel)}`)).status, 200, "snapshot"),
      },
      "DELETE /v1/snapshots/:idOrName": {
        run: async () =>
          ok(
            (await s.api(`/v1/snapshots/${await snapshotOf(sentinel)}`, { method: "DELETE" })).status,
            204,
            "del snap",
          ),
      },
      "POST /v1/snapshots/:idOrName/restore": {
        run: async () => {
          const r = await post(`/v1/snapshots/${await snapshotOf(sentinel)}/restore`, {});
          ok(r.status, 201, "restore");
          await del(((r.body as Json).sandbox as Json).sandboxId as string);
        },
      },
      "GET /v1/snapshot-keys": {
        run: async () => ok((await s.api("/v1/snapshot-keys")).status, 200, "keys"),
      },

      // Connect
      [`${CONNECT}/CreateSandbox`]: {
        run: async () => cleanup.push((await rpc.createSandbox({})).sandbox!.sandboxId),
      },
      [`${CONNECT}/GetSandbox`]: { run: () => rpc.getSandbox({ sandboxId: nat }) },
      [`${CONNECT}/ListSandboxes`]: { run: () => rpc.listSandboxes({}) },
      [`${CONNECT}/DeleteSandbox`]: {
        run: async () => rpc.deleteSandbox({ sandboxId: (await rpc.createSandbox({})).sandbox!.sandboxId }),
      },
      [`${CONNECT}/PauseSandbox`]: { run: () => rpc.pauseSandbox({ sandboxId: nat }) },
      [`${CONNECT}/ArchiveSandbox`]: { run: () => rpc.archiveSandbox({ sandboxId: nat }) },
      [`${CONNECT}/ResumeSandbox`]: { resumes: nat, run: () => rpc.resumeSandbox({ sandboxId: nat }) },
      [`${CONNECT}/UpdateLifecycle`]: {
        run: () => rpc.updateLifecycle({ sandboxId: nat, autoStopMinutes: 45 }),
      },
      [`${CONNECT}/ListSandboxEvents`]: { run: () => rpc.listSandboxEvents({ sandboxId: nat }) },
      [`${CONNECT}/GetSnapshot`]: {
        run: async () => rpc.getSnapshot({ snapshotId: await snapshotOf(sentinel) }),
      },
      [`${CONNECT}/ListSnapshots`]: { run: () => rpc.listSnapshots({}) },
      [`${CONNECT}/DeleteSnapshot`]: {
        run: async () => rpc.deleteSnapshot({ snapshotId: await snapshotOf(sentinel) }),
      },
      [`${CONNECT}/RestoreSnapshot`]: {
        run: async () => {
          const r = await rpc.restoreSnapshot({ snapshotId: await snapshotOf(sentinel) });
          await del(r.sandbox!.sandboxId);
        },
      },
      [`${CONNECT}/ListSnapshotKeys`]: { run: () => rpc.listSnapshotKeys({}) },
      [`${CONNECT}/Exec`]: { target: nat, run: () => rpc.exec({ sandboxId: nat, command: "true" }) },
      [`${CONNECT}/ExecStream`]: {
        target: nat,
        run: async () => {
          for await (const _ of rpc.execStream(
            create(ExecStreamRequestSchema, { sandboxId: nat, command: "true" }),
          ));
        },
      },
      [`${CONNECT}/WriteFile`]: {
        target: nat,
        run: () => rpc.writeFile({ sandboxId: nat, path: "b.txt", content: new Uint8Array([1]) }),
      },
      [`${CONNECT}/ReadFile`]: { target: nat, run: () => rpc.readFile({ sandboxId: nat, path: "b.txt" }) },
      [`${CONNECT}/ListFiles`]: { target: nat, run: () => rpc.listFiles({ sandboxId: nat, path: "" }) },
      [`${CONNECT}/GetSandboxMetrics`]: { target: nat, run: () => rpc.getSandboxMetrics({ sandboxId: nat }) },
      [`${CONNECT}/SnapshotSandbox`]: { target: nat, run: () => rpc.snapshotSandbox({ sandboxId: nat }) },
      [`${CONNECT}/ForkSandbox`]: {
        target: nat,
        run: async () => {
          const r = await rpc.forkSandbox({ sandboxId: nat, count: 1 });
          for (const x of r.results) if (x.sandbox) await del(x.sandbox.sandboxId);
        },
      },

      // E2B: the SDK's commands.run goes through the sandbox proxy
      "PROXY e2b sandbox traffic": {
        target: e2b.sandboxId,
        run: async () => {
          const sbx = await E2bSandbox.connect(e2b.sandboxId, e2bOpts);
          assert.equal((await sbx.commands.run("echo hi")).stdout, "hi\n");
        },
      },
      "POST /sandboxes": {
        run: async () => {
          const r = await e2bApi("/sandboxes", {
            method: "POST",
            body: JSON.stringify({ templateID: "base" }),
          });
          ok(r.status, 201, `e2b create ${r.body}`);
          cleanup.push((JSON.parse(r.body) as Json).sandboxID as string);
        },
      },
      "POST /v2/sandboxes": {
        run: async () => {
          const r = await e2bApi("/v2/sandboxes", {
            method: "POST",
            body: JSON.stringify({ templateID: "base" }),
          });
          ok(r.status, 201, `e2b create v2 ${r.body}`);
          cleanup.push((JSON.parse(r.body) as Json).sandboxID as string);
        },
      },
      "GET /sandboxes": { run: async () => ok((await e2bApi("/sandboxes")).status, 200, "e2b list") },
      "GET /v2/sandboxes": {
        run: async () => ok((await e2bApi("/v2/sandboxes")).status, 200, "e2b list v2"),
      },
      "GET /sandboxes/:id": {
        run: async () => ok((await e2bApi(`/sandboxes/${e2b.sandboxId}`)).status, 200, "e2b get"),
      },
      "DELETE /sandboxes/:id": {
        run: async () => {
          const x = await E2bSandbox.create(e2bOpts);
          ok((await e2bApi(`/sandboxes/${x.sandboxId}`, { method: "DELETE" })).status, 204, "e2b kill");
        },
      },
      "POST /sandboxes/:id/timeout": {
        run: async () =>
          ok(
            (await e2bApi(`/sandboxes/${e2b.sandboxId}/timeout`, { method: "POST", body: '{"timeout":600}' }))
              .status,
            204,
            "e2b timeout",
          ),
      },
      "POST /sandboxes/:id/pause": {
        run: async () =>
          ok((await e2bApi(`/sandboxes/${e2b.sandboxId}/pause`, { method: "POST" })).status, 204, "pause"),
      },
      "POST /sandboxes/:id/connect": {
        resumes: e2b.sandboxId,
        run: async () =>
          ok(
            (await e2bApi(`/sandboxes/${e2b.sandboxId}/connect`, { method: "POST", body: '{"timeout":600}' }))
              .status,
            [200, 201],
            "connect",
          ),
      },
      "POST /v2/sandboxes/:id/connect": {
        run: async () =>
          ok(
            (
              await e2bApi(`/v2/sandboxes/${e2b.sandboxId}/connect`, {
                method: "POST",
                body: '{"timeout":600}',
              })
            ).status,
            200,
            "connect v2 (running)",
          ),
      },
      "POST /sandboxes/:id/resume": {
        resumes: e2b.sandboxId,
        run: async () => {
          ok((await e2bApi(`/sandboxes/${e2b.sandboxId}/pause`, { method: "POST" })).status, 204, "pause");
          const r = await e2bApi(`/sandboxes/${e2b.sandboxId}/resume`, {
            method: "POST",
            body: '{"timeout":600}',
          });
          ok(r.status, 201, `legacy resume ${r.body}`);
        },
      },
      "GET /sandboxes/:id/metrics": {
        target: e2b.sandboxId,
        run: async () => ok((await e2bApi(`/sandboxes/${e2b.sandboxId}/metrics`)).status, 200, "e2b metrics"),
      },
      "GET /sandboxes/metrics": {
        target: e2b.sandboxId,
        run: async () =>
          ok((await e2bApi(`/sandboxes/metrics?sandbox_ids=${e2b.sandboxId}`)).status, 200, "e2b metrics v1"),
      },
      "POST /sandboxes/:id/snapshots": {
        target: e2b.sandboxId,
        run: async () =>
          ok(
            (await e2bApi(`/sandboxes/${e2b.sandboxId}/snapshots`, { method: "POST", body: "{}" })).status,
            [200, 201],
            "e2b snapshot",
          ),
      },
      "GET /snapshots": { run: async () => ok((await e2bApi("/snapshots")).status, 200, "e2b snapshots") },
      "DELETE /templates/:id": {
        run: async () =>
          ok(
            (await e2bApi(`/templates/${await snapshotOf(sentinel)}`, { method: "DELETE" })).status,
            [200, 204],
            "e2b del snap",
          ),
      },
      "POST /sandboxes/:id/fork": {
        target: e2b.sandboxId,
        run: async () => {
          const r = await e2bApi(`/sandboxes/${e2b.sandboxId}/fork`, { method: "POST", body: "{}" });
          ok(r.status, [200, 201], `e2b fork ${r.body}`);
          for (const x of JSON.parse(r.body) as { sandbox?: Json }[])
            if (x.sandbox) cleanup.push(x.sandbox.sandboxID as string);
        },
      },

      // Daytona
      "POST /api/sandbox": { run: async () => cleanup.push((await daytona.create({})).id) },
      "GET /api/sandbox": { run: async () => ok((await dayApi("/sandbox")).status, 200, "daytona list") },
      "GET /api/sandbox/:idOrName": {
        run: async () => ok((await dayApi(`/sandbox/${day.id}`)).status, 200, "get"),
      },
      "GET /api/sandbox/:idOrName/toolbox-proxy-url": {
        run: async () =>
          ok((await dayApi(`/sandbox/${day.id}/toolbox-proxy-url`)).status, 200, "toolbox url"),
      },
      "DELETE /api/sandbox/:idOrName": {
        run: async () =>
          ok(
            (await dayApi(`/sandbox/${(await daytona.create({})).id}`, { method: "DELETE" })).status,
            [200, 204],
            "daytona delete",
          ),
      },
      "POST /api/sandbox/:idOrName/autostop/:interval": { run: () => day.setAutostopInterval(30) },
      "POST /api/sandbox/:idOrName/autoarchive/:interval": { run: () => day.setAutoArchiveInterval(60) },
      "POST /api/sandbox/:idOrName/autodelete/:interval": { run: () => day.setAutoDeleteInterval(-1) },
      "PUT /api/sandbox/:idOrName/labels": { run: () => day.setLabels({ walk: "yes" }) },
      "GET /api/sandbox/:idOrName/ports/:port/preview-url": { run: () => day.getPreviewLink(49983) },
      "POST /api/sandbox/:idOrName/last-activity": { target: day.id, run: () => day.refreshActivity() },
      "POST /api/sandbox/:idOrName/fork": {
        target: day.id,
        run: async () => {
          const r = await dayApi(`/sandbox/${day.id}/fork`, { method: "POST", body: "{}" });
          ok(r.status, [200, 201], `daytona fork ${JSON.stringify(r.body)}`);
          cleanup.push((r.body as Json).id as string);
        },
      },
      "* /toolbox/:sandboxId/*": {
        target: day.id,
        run: async () => assert.equal((await day.process.executeCommand("echo hi")).result, "hi\n"),
      },
      "* /preview/*": {
        target: day.id,
        run: async () => {
          const link = await day.getPreviewLink(49983);
          const r = await fetch(`${link.url}health`, { headers: { "x-daytona-preview-token": link.token } });
          await r.arrayBuffer();
        },
      },
      // MCP: the handshake itself touches no sandbox (its tools' REST calls count themselves).
      "* /mcp": {
        run: async () => {
          const r = await s.api("/mcp", {
            method: "POST",
            headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
            body: JSON.stringify({
              jsonrpc: "2.0",
              id: 1,
              method: "initialize",
              params: {
                protocolVersion: "2025-06-18",
                capabilities: {},
                clientInfo: { name: "walk", version: "0" },
              },
            }),
          });
          ok(r.status, 200, "mcp initialize");
          assert.match(await r.text(), /"serverInfo"/);
        },
      },
      // Last, in this order: the Daytona sandbox ends paused (deleted below).
      "POST /api/sandbox/:idOrName/stop": { run: () => day.stop() },
      "POST /api/sandbox/:idOrName/archive": { run: () => day.archive() },
      "POST /api/sandbox/:idOrName/start": { resumes: day.id, run: () => day.start() },
      "POST /api/sandbox/:idOrName/pause": {
        run: async () =>
          ok((await dayApi(`/sandbox/${day.id}/pause`, { method: "POST" })).status, [200, 201], "pause"),
      },
      // Templates: none is about a sandbox, so none counts. Cheap calls (no build runs):
      // unknown ids and bad input are enough to reach each route.
      ...templateSteps(),
    };

    // The walk covers the table exactly.
    assert.deepEqual(Object.keys(steps).sort(), Object.keys(ACTIVITY_ROUTES).sort());

    // In the order written: pause before resume, stop before archive before start.
    const results: string[] = [];
    for (const key of Object.keys(steps)) {
      const step = steps[key]!;
      const rule = ACTIVITY_ROUTES[key];
      const before = await allActivity();
      await step.run();
      await barrier();
      const afterAll = await allActivity();
      if (rule === false) {
        assert.equal(step.target, undefined, `${key}: a not-counted step names no target`);
        for (const [id, t] of before) {
          if (id === sentinel || id === step.resumes || !afterAll.has(id)) continue;
          assert.equal(afterAll.get(id), t, `${key} moved ${id}'s lastActivityAt`);
        }
        results.push(`${key}: not counted`);
      } else {
        assert.ok(step.target, `${key}: a counted step names its target`);
        const was = before.get(step.target!);
        assert.ok(was !== undefined, `${key}: target ${step.target} not live before`);
        const now = await activityOf(step.target!);
        assert.ok(now > was, `${key} did not move ${step.target}'s lastActivityAt`);
        results.push(`${key}: counted`);
      }
    }
    assert.equal(results.length, Object.keys(ACTIVITY_ROUTES).length);

    for (const id of cleanup) await del(id);
    await daytona[Symbol.asyncDispose]();
  });

  test("a gateway's close() flushes the marks it still holds", async () => {
    const id = (await created({})).sandboxId as string;
    // A second gateway on the same stack whose timer never fires during the test.
    const cfg = configFromEnv({
      DNAH_SCHEDULER_URL: s.schedulerUrl,
      DNAH_SNAPSHOT_URL: s.snapshotUrl,
      DNAH_API_KEY: s.key,
      DNAH_PORT: "0",
      DNAH_GATEWAY_HOST: "127.0.0.1",
      DNAH_ACTIVITY_FLUSH_MS: "60000",
    });
    const gw = await createGateway(cfg, {
      db: s.db,
      scheduler: createServiceClient(SchedulerService, s.schedulerUrl),
      logger: silentLogger(),
    });
    const url = await gw.start();
    const before = Date.parse((await s.json<Json>(`/v1/sandboxes/${id}`)).body.lastActivityAt as string);
    const r = await fetch(`${url}/v1/sandboxes/${id}/metrics`, {
      headers: { authorization: `Bearer ${s.key}` },
    });
    assert.equal(r.status, 200);
    assert.equal(gw.activity.pending, 1);
    assert.equal(
      Date.parse((await s.json<Json>(`/v1/sandboxes/${id}`)).body.lastActivityAt as string),
      before,
      "nothing is written before a flush",
    );
    await gw.close();
    const afterClose = Date.parse((await s.json<Json>(`/v1/sandboxes/${id}`)).body.lastActivityAt as string);
    assert.ok(afterClose > before, "close() sent the pending mark");
    await del(id);
  });
});
