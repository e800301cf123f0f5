import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { startTestStack, type TestStack } from "./harness.js";

interface Sandbox {
  sandboxId: string;
  templateId: string;
  state: string;
}
interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  error?: string;
}

describe("core over REST: create → exec → files → delete", () => {
  let s: TestStack;
  let id: string;
  const exec = async (body: Record<string, unknown>) => {
    const r = await s.json<ExecResult>(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };

  before(async () => {
    s = await startTestStack();
    const r = await s.json<Sandbox>("/v1/sandboxes", {
      method: "POST",
      body: JSON.stringify({ metadata: { suite: "core" }, envVars: { GLOBAL_VAR: "from-create" } }),
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.match(r.body.sandboxId, /^[a-z0-9]+$/);
    assert.equal(r.body.templateId, "base");
    id = r.body.sandboxId;
  });
  after(async () => {
    await s?.close();
  });

  test("get and list show the sandbox", async () => {
    const one = await s.json<Sandbox>(`/v1/sandboxes/${id}`);
    assert.equal(one.status, 200);
    assert.equal(one.body.sandboxId, id);
    const list = await s.json<{ sandboxes: Sandbox[] }>("/v1/sandboxes?metadata.suite=core");
    assert.deepEqual(
      list.body.sandboxes.map((x) => x.sandboxId),
      [id],
    );
  });

  test("echo, exit codes, stderr", async () => {
    assert.deepEqual(await exec({ command: "echo hello" }), {
      exitCode: 0,
      stdout: "hello\n",
      stderr: "",
      truncated: false,
    });
    const r = await exec({ command: "echo oops >&2; exit 3" });
    assert.equal(r.exitCode, 3);
    assert.equal(r.stderr, "oops\n");
  });

  test("env: create-time vars, per-call vars, identity", async () => {
    const r = await exec({
      command: 'echo "$GLOBAL_VAR $CALL_VAR $(whoami) $HOME"',
      envs: { CALL_VAR: "per-call" },
    });
    assert.equal(r.stdout, "from-create per-call user /home/user\n");
  });

  test("cwd: default home, explicit, missing", async () => {
    assert.equal((await exec({ command: "pwd" })).stdout, "/home/user\n");
    assert.equal((await exec({ command: "pwd", cwd: "/tmp" })).stdout, "/tmp\n");
    const bad = await s.json<{ code: string; message: string }>(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      body: JSON.stringify({ command: "pwd", cwd: "/no/such/dir" }),
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.code, "invalid_argument");
  });

  test("stdin is delivered and closed", async () => {
    assert.equal((await exec({ command: "tr a-z A-Z", stdin: "shout\n" })).stdout, "SHOUT\n");
  });

  test("a timeout kills the process", async () => {
    const started = Date.now();
    const r = await exec({ command: "sleep 30", timeoutMs: 500 });
    assert.notEqual(r.exitCode, 0);
    assert.ok(Date.now() - started < 10_000);
  });

  test("a long-running command streams its output as it runs", async () => {
    const res = await s.api(`/v1/sandboxes/${id}/exec/stream`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ command: "for i in 1 2 3; do echo tick $i; sleep 0.3; done; echo done >&2" }),
    });
    assert.equal(res.status, 200);
    const events: Array<{ type: string; data?: string; exitCode?: number; pid?: number; at: number }> = [];
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        events.push({ ...JSON.parse(buf.slice(0, nl)), at: Date.now() });
        buf = buf.slice(nl + 1);
        nl = buf.indexOf("\n");
      }
    }
    assert.equal(events[0]?.type, "start");
    assert.ok((events[0]?.pid ?? 0) > 0);
    const ticks = events.filter((e) => e.type === "stdout");
    assert.equal(ticks.map((e) => e.data).join(""), "tick 1\ntick 2\ntick 3\n");
    // Streamed, not buffered: the first tick arrived well before the last.
    assert.ok(ticks.at(-1)!.at - ticks[0]!.at >= 400, "output arrived all at once");
    assert.equal(
      events
        .filter((e) => e.type === "stderr")
        .map((e) => e.data)
        .join(""),
      "done\n",
    );
    assert.deepEqual(events.at(-1)?.type, "exit");
    assert.equal(events.at(-1)?.exitCode, 0);
  });

  test("closing a stream kills its process", async () => {
    const ac = new AbortController();
    const res = await s.api(`/v1/sandboxes/${id}/exec/stream`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ command: "echo started; exec sleep 1000" }),
      signal: ac.signal,
    });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let seen = "";
    while (!seen.includes("started")) seen += new TextDecoder().decode((await reader.read()).value);
    ac.abort();
    // The sleep is gone within a few seconds.
    let alive = true;
    for (let i = 0; i < 50 && alive; i++) {
      await new Promise((r) => setTimeout(r, 100));
      alive =
        (await exec({ command: "pgrep -x sleep >/dev/null && echo yes || echo no" })).stdout === "yes\n";
    }
    assert.equal(alive, false);
  });

  test("files: write, read, list, binary-safe", async () => {
    const bytes = Buffer.alloc(256 * 4);
    for (let i = 0; i < bytes.length; i++) bytes[i] = i % 256;
    const put = await s.api(`/v1/sandboxes/${id}/files?path=/home/user/data/blob.bin`, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: bytes,
    });
    assert.equal(put.status, 200, await put.clone().text());
    const got = await s.api(`/v1/sandboxes/${id}/files?path=/home/user/data/blob.bin`);
    assert.equal(got.status, 200);
    assert.deepEqual(Buffer.from(await got.arrayBuffer()), bytes);
    await s.api(`/v1/sandboxes/${id}/files?path=data/note.txt`, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: "hi\n",
    });
    const list = await s.json<{ entries: Array<{ name: string; type: string; sizeBytes: number }> }>(
      `/v1/sandboxes/${id}/files/list?path=/home/user/data`,
    );
    assert.equal(list.status, 200);
    const byName = Object.fromEntries(list.body.entries.map((e) => [e.name, e]));
    assert.equal(byName["blob.bin"]?.type, "file");
    assert.equal(Number(byName["blob.bin"]?.sizeBytes), 1024);
    assert.equal(byName["note.txt"]?.type, "file");
    // The sandbox's processes see the same file, owned by the user.
    assert.equal((await exec({ command: "stat -c %U:%s /home/user/data/blob.bin" })).stdout, "user:1024\n");
  });

  test("delete removes every process, mount, cgroup and folder", async () => {
    const dir = `${s.stateDir}/sandboxes/${id}`;
    assert.ok(existsSync(dir));
    const cgroupDirs = [
      "/sys/fs/cgroup/memory",
      "/sys/fs/cgroup/pids",
      "/sys/fs/cgroup",
      "/sys/fs/cgroup/unified",
    ].map((root) => `${root}/${s.cgroupParent}/${id}`);
    assert.ok(
      cgroupDirs.some((d) => existsSync(d)),
      "sandbox has a cgroup",
    );
    const del = await s.api(`/v1/sandboxes/${id}`, { method: "DELETE" });
    assert.equal(del.status, 204);
    assert.equal(existsSync(dir), false, "folder left behind");
    assert.ok(
      cgroupDirs.every((d) => !existsSync(d)),
      "cgroup left behind",
    );
    const mounts = readFileSync("/proc/self/mounts", "utf8");
    assert.equal(mounts.includes(dir), false, "mount left behind");
    // No process on the host still has the sandbox's root as its root or cwd.
    for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
      try {
        const env = readFileSync(`/proc/${pid}/environ`, "latin1");
        assert.equal(env.includes(`DNAH_SANDBOX_ID=${id}\0`), false, `process ${pid} survived`);
      } catch (err) {
        if (!["ENOENT", "ESRCH", "EACCES"].includes((err as NodeJS.ErrnoException).code ?? "")) throw err;
      }
    }
    const gone = await s.json<{ code: string }>(`/v1/sandboxes/${id}`);
    assert.equal(gone.status, 404);
    assert.equal(gone.body.code, "not_found");
  });
});
