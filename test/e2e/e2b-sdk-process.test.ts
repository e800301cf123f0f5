import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CommandExitError, type FilesystemEvent, FileType, Sandbox, TimeoutError } from "e2b";
import { startTestStack, type TestStack } from "./harness.js";

/** Waits until cond() is true, polling briefly. */
async function until(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Processes, PTY and filesystem features of the real `e2b` SDK, served by the in-sandbox envd through the gateway. */
describe("e2b SDK 2.51.0: processes, pty, files", () => {
  let s: TestStack;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
  let sbx: Sandbox;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
    sbx = await Sandbox.create({ ...opts, metadata: { suite: "e2b-sdk-process" } });
  });
  after(async () => {
    await s?.close();
  });

  test("isRunning and list by metadata", async () => {
    assert.equal(await sbx.isRunning(), true);
    const items = await Sandbox.list({
      ...opts,
      query: { metadata: { suite: "e2b-sdk-process" } },
    }).nextItems();
    assert.deepEqual(
      items.map((i) => i.sandboxId),
      [sbx.sandboxId],
    );
    const none = await Sandbox.list({ ...opts, query: { metadata: { suite: "nope" } } }).nextItems();
    assert.deepEqual(none, []);
  });

  test("background run: onStdout streams, wait gives the result", async () => {
    const chunks: string[] = [];
    const h = await sbx.commands.run("echo one; sleep 0.2; echo two", {
      background: true,
      onStdout: (d) => {
        chunks.push(d);
      },
    });
    assert.ok(h.pid > 0);
    const r = await h.wait();
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "one\ntwo\n");
    assert.equal(chunks.join(""), "one\ntwo\n");
  });

  test("stdin: handle.sendStdin, commands.sendStdin, closeStdin", async () => {
    let out = "";
    const h = await sbx.commands.run("cat", {
      background: true,
      stdin: true,
      onStdout: (d) => {
        out += d;
      },
    });
    await h.sendStdin("hello\n");
    await until(() => out === "hello\n");
    await sbx.commands.sendStdin(h.pid, "world\n");
    await until(() => out === "hello\nworld\n");
    await h.closeStdin();
    const r = await h.wait();
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "hello\nworld\n");
  });

  test("list, connect and kill a running command; unknown pid", async () => {
    const h = await sbx.commands.run("echo started; while true; do sleep 0.1; echo tick; done", {
      background: true,
    });
    const procs = await sbx.commands.list();
    const mine = procs.find((p) => p.pid === h.pid);
    assert.ok(mine, JSON.stringify(procs));

    let seen = "";
    const c = await sbx.commands.connect(h.pid, {
      onStdout: (d) => {
        seen += d;
      },
    });
    assert.equal(c.pid, h.pid);
    await until(() => seen.includes("tick"));

    assert.equal(await sbx.commands.kill(h.pid), true);
    for (const handle of [h, c]) {
      await assert.rejects(handle.wait(), (err: unknown) => {
        assert.ok(err instanceof CommandExitError, String(err));
        // envd reports a signal death as exit code -1 with the Go error text.
        assert.equal(err.exitCode, -1);
        assert.equal(err.error, "signal: killed");
        return true;
      });
    }
    const after = await sbx.commands.list();
    assert.ok(!after.some((p) => p.pid === h.pid));
    assert.equal(await sbx.commands.kill(h.pid), false);
    assert.equal(await sbx.commands.kill(999_999), false);
  });

  test("timeoutMs on run throws TimeoutError", async () => {
    const t0 = Date.now();
    await assert.rejects(sbx.commands.run("sleep 30", { timeoutMs: 1000 }), (err: unknown) => {
      assert.ok(err instanceof TimeoutError, String(err));
      return true;
    });
    assert.ok(Date.now() - t0 < 10_000);
  });

  test("pty: create, sendInput, resize, output", async () => {
    const dec = new TextDecoder();
    let out = "";
    const pty = await sbx.pty.create({
      cols: 80,
      rows: 24,
      onData: (d) => {
        out += dec.decode(d, { stream: true });
      },
    });
    assert.ok(pty.pid > 0);
    await sbx.pty.resize(pty.pid, { cols: 120, rows: 40 });
    await sbx.pty.sendInput(pty.pid, new TextEncoder().encode("echo $((40+2))\nexit\n"));
    const r = await pty.wait();
    assert.equal(r.exitCode, 0);
    // The echoed input contains "$((40+2))", never a bare "42" line; the answer follows a CR/LF.
    assert.match(out, /[\r\n]42\r\n/);
  });

  test("files: makeDir, write entries, getInfo, rename, remove", async () => {
    const dir = "/tmp/e2b-fs-ops";
    assert.equal(await sbx.files.makeDir(dir), true);
    assert.equal(await sbx.files.makeDir(dir), false);
    const written = await sbx.files.write([
      { path: `${dir}/a.txt`, data: "aaa" },
      { path: `${dir}/b.txt`, data: "bbbbb" },
    ]);
    assert.deepEqual(written.map((w) => w.path).sort(), [`${dir}/a.txt`, `${dir}/b.txt`]);
    assert.equal(await sbx.files.read(`${dir}/b.txt`), "bbbbb");

    const info = await sbx.files.getInfo(`${dir}/b.txt`);
    assert.equal(info.type, FileType.FILE);
    assert.equal(info.size, 5);
    assert.equal(info.path, `${dir}/b.txt`);
    assert.equal(info.name, "b.txt");
    assert.equal((await sbx.files.getInfo(dir)).type, FileType.DIR);

    const moved = await sbx.files.rename(`${dir}/a.txt`, `${dir}/c.txt`);
    assert.equal(moved.path, `${dir}/c.txt`);
    assert.equal(await sbx.files.exists(`${dir}/a.txt`), false);
    assert.equal(await sbx.files.read(`${dir}/c.txt`), "aaa");

    await sbx.files.remove(`${dir}/c.txt`);
    assert.equal(await sbx.files.exists(`${dir}/c.txt`), false);
    await sbx.files.remove(dir);
    assert.equal(await sbx.files.exists(dir), false);
  });

  test("files.watchDir sees a file written afterwards", async () => {
    const dir = "/tmp/e2b-watch";
    await sbx.files.makeDir(dir);
    const events: FilesystemEvent[] = [];
    const w = await sbx.files.watchDir(dir, (e) => {
      events.push(e);
    });
    try {
      await sbx.files.write(`${dir}/new.txt`, "x");
      await until(() => events.some((e) => e.name === "new.txt"));
      assert.ok(
        events.some((e) => e.name === "new.txt" && ["create", "write"].includes(e.type)),
        JSON.stringify(events),
      );
    } finally {
      await w.stop();
    }
  });
});
