import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Sandbox as E2bSandbox, FilesystemEventType } from "e2b";
import WebSocket from "ws";
import { shareEvents } from "../../services/vmm/src/share/events.js";
import { eventually, startTestStack, type TestStack } from "./harness.js";

type Ev = { type: string; path: string; at: string };

/**
 * `/v1/sandboxes/{id}/files/watch` over SSE and WebSocket on jail sandboxes: guest writes
 * (recursive), host-side uploads to the share, refused paths, the end of a watch (client gone:
 * no watcher left in the agent or the vmm; sandbox deleted: the stream ends), and envd's
 * WatchDir through the E2B SDK beside it.
 */
describe("files watch: SSE and WebSocket", () => {
  let s: TestStack;
  let id: string;

  const exec = async (id: string, command: string, user?: string) => {
    const r = await s.json<{ exitCode: number; stdout: string; stderr: string }>(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      body: JSON.stringify({ command, ...(user && { user }) }),
      headers: { "content-type": "application/json" },
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.exitCode, 0, r.body.stderr);
    return r.body.stdout;
  };
  const create = async () => {
    const r = await s.json<{ sandboxId: string }>("/v1/sandboxes", {
      method: "POST",
      body: "{}",
      headers: { "content-type": "application/json" },
    });
    assert.equal(r.status, 201);
    return r.body.sandboxId;
  };
  /** inotify watches the guest agent holds (one per watched folder), from its fdinfo. */
  const inotify = async (sid: string) =>
    Number(
      (
        await exec(
          sid,
          "n=0; for p in /proc/[0-9]*; do case $(tr '\\0' ' ' < $p/cmdline 2>/dev/null) in" +
            " */node\\ *agent.mjs*) n=$((n + $(cat $p/fdinfo/* 2>/dev/null | grep -c '^inotify wd:')));; esac; done; echo $n",
          "root",
        )
      ).trim(),
    );

  /** An SSE watch: collects events; `ended` resolves with the end reason. */
  const sse = async (sid: string, path: string) => {
    const ac = new AbortController();
    const r = await s.api(
      `/v1/sandboxes/${sid}/files/watch?path=${encodeURIComponent(path)}&recursive=true`,
      {
        signal: ac.signal,
      },
    );
    if (r.status !== 200) assert.fail(`watch refused: ${r.status} ${await r.text()}`);
    assert.match(r.headers.get("content-type") ?? "", /^text\/event-stream/);
    const events: Ev[] = [];
    const reader = r.body!.getReader();
    let buf = "";
    let started!: () => void;
    const start = new Promise<void>((res) => {
      started = res;
    });
    const ended = (async () => {
      const dec = new TextDecoder();
      try {
        while (true) {
          const { value, done } = await reader.read();
          if (done) return "closed";
          buf += dec.decode(value, { stream: true });
          let at = buf.indexOf("\n\n");
          while (at !== -1) {
            const block = buf.slice(0, at);
            buf = buf.slice(at + 2);
            if (block.startsWith("event: start")) started();
            else if (block.startsWith("event: end")) return block;
            else if (block.startsWith("data: ")) events.push(JSON.parse(block.slice(6)) as Ev);
            at = buf.indexOf("\n\n");
          }
        }
      } catch {
        return "aborted";
      }
    })();
    await start;
    return { events, ended, close: () => ac.abort() };
  };

  const ws = async (sid: string, path: string) => {
    const url = `${s.url.replace(/^http/, "ws")}/v1/sandboxes/${sid}/files/watch?path=${encodeURIComponent(path)}&recursive=true`;
    const sock = new WebSocket(url, { headers: { authorization: `Bearer ${s.key}` } });
    const events: Ev[] = [];
    const closed = new Promise<{ code: number; reason: string }>((res) =>
      sock.on("close", (code, reason) => res({ code, reason: reason.toString() })),
    );
    let first: { type: string; code?: string } | undefined;
    await new Promise<void>((res, rej) => {
      sock.on("message", (data) => {
        const m = JSON.parse(data.toString()) as Ev & { code?: string };
        if (first === undefined) {
          first = m;
          res();
        } else events.push(m);
      });
      sock.on("error", rej);
    });
    return { first: first!, events, closed, close: () => sock.close() };
  };

  /** Waits until `ok(events)`; the events seen are in the failure. */
  const seen = async (events: Ev[], ok: () => boolean) => {
    await eventually(async () => ok()).catch(() => {
      assert.fail(`events seen: ${JSON.stringify(events.map((e) => `${e.type} ${e.path}`))}`);
    });
  };
  const has = (events: Ev[], type: string | string[], path: string) =>
    events.some((e) => (Array.isArray(type) ? type : [type]).includes(e.type) && e.path === path);
  const upload = (sid: string, rel: string, body: string) =>
    s.api(`/v1/sandboxes/${sid}/share/${rel}`, {
      method: "PUT",
      body,
      headers: { "content-type": "application/octet-stream" },
    });

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0" });
    id = await create();
    // The nested folders exist before the watches start.
    await exec(id, "mkdir -p /home/user/w/nested /mnt/dnah-share/w/nested");
  });
  after(async () => {
    await s?.api(`/v1/sandboxes/${id}`, { method: "DELETE" }).catch(() => {});
    await s?.close();
  });

  test("SSE: guest writes in a nested folder (create, write, remove/rename); the agent's watcher goes with the client", async () => {
    const idle = await inotify(id);
    const w = await sse(id, "/home/user/w");
    assert.ok((await inotify(id)) > idle, "the agent watches");
    await exec(id, "cd /home/user/w/nested && sh -c 'echo a > f; mv f g; rm g'");
    const d = "/home/user/w/nested";
    await seen(
      w.events,
      () =>
        has(w.events, "create", `${d}/f`) &&
        has(w.events, "write", `${d}/f`) &&
        has(w.events, ["rename", "remove"], `${d}/f`) &&
        has(w.events, "create", `${d}/g`) &&
        has(w.events, "remove", `${d}/g`),
    );
    for (const e of w.events) assert.ok(!Number.isNaN(Date.parse(e.at)), `at is a time: ${e.at}`);
    w.close();
    await eventually(async () => (await inotify(id)) === idle, 20_000);
  });

  test("WebSocket: guest writes and a host-side upload in the share; nothing left watching after", async () => {
    const w = await ws(id, "/mnt/dnah-share/w");
    assert.equal(w.first.type, "start");
    await exec(id, "cd /mnt/dnah-share/w/nested && sh -c 'echo a > f; mv f g; rm g'");
    assert.equal((await upload(id, "w/nested/up.txt", "from the host")).status, 200);
    const d = "/mnt/dnah-share/w/nested";
    await seen(
      w.events,
      () =>
        has(w.events, "create", `${d}/f`) &&
        has(w.events, "write", `${d}/f`) &&
        has(w.events, ["rename", "remove"], `${d}/f`) &&
        has(w.events, "create", `${d}/g`) &&
        has(w.events, "remove", `${d}/g`) &&
        has(w.events, "create", `${d}/up.txt`),
    );
    assert.ok(!w.events.some((e) => e.path.includes(".dnah-upload-")), "no upload temporaries");
    w.close();
    assert.equal((await w.closed).code, 1005);
    await eventually(async () => shareEvents.watched === 0);
  });

  test("SSE: a host-side upload to the share, while the sandbox is paused too", async () => {
    const w = await sse(id, "/mnt/dnah-share");
    assert.equal((await upload(id, "w/nested/sse.txt", "x")).status, 200);
    await seen(w.events, () => has(w.events, "create", "/mnt/dnah-share/w/nested/sse.txt"));
    assert.equal((await s.api(`/v1/sandboxes/${id}/pause`, { method: "POST" })).status, 200);
    assert.equal((await upload(id, "paused.txt", "y")).status, 200);
    await seen(w.events, () => has(w.events, "create", "/mnt/dnah-share/paused.txt"));
    assert.equal((await s.api(`/v1/sandboxes/${id}/resume`, { method: "POST" })).status, 200);
    w.close();
  });

  test("refused: relative, '..', NUL, bad recursive, unknown sandbox, missing folder (SSE and WebSocket)", async () => {
    const get = (q: string, sid = id) => s.api(`/v1/sandboxes/${sid}/files/watch?${q}`);
    for (const q of [
      "path=tmp",
      "path=/tmp/../etc",
      "path=/mnt/dnah-share/../../etc",
      "path=/tmp%00x",
      "path=",
      "path=/tmp&recursive=maybe",
    ]) {
      const r = await get(q);
      assert.equal(r.status, 400, q);
      const b = (await r.json()) as { code: string; message: string };
      assert.equal(b.code, "invalid_argument");
      assert.doesNotMatch(b.message, /at .*\.ts/);
    }
    assert.equal((await get("path=/tmp", "nosuchsandbox")).status, 404);
    assert.equal((await get("path=/no/such/dir")).status, 404);
    assert.equal((await get("path=/mnt/dnah-share/no/such")).status, 404);
    const w = await ws(id, "/tmp/../etc");
    assert.deepEqual([w.first.type, w.first.code], ["error", "invalid_argument"]);
    assert.equal((await w.closed).code, 1008);
  });

  test("the stream ends when the sandbox is deleted", async () => {
    const other = await create();
    const w = await sse(other, "/tmp");
    assert.equal((await s.api(`/v1/sandboxes/${other}`, { method: "DELETE" })).status, 204);
    assert.match(await w.ended, /event: end/);
  });

  test("E2B SDK files.watchDir still works", async () => {
    const opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
    const sbx = await E2bSandbox.create(opts);
    try {
      await sbx.files.makeDir("/home/user/e2bw");
      const seen: { type: FilesystemEventType; name: string }[] = [];
      const h = await sbx.files.watchDir("/home/user/e2bw", (e) => {
        seen.push(e);
      });
      await sbx.files.write("/home/user/e2bw/a.txt", "x");
      await eventually(async () =>
        seen.some((e) => e.name === "a.txt" && e.type === FilesystemEventType.WRITE),
      );
      await h.stop();
    } finally {
      await sbx.kill();
    }
  });
});
