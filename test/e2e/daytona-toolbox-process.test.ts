import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  Daytona,
  DaytonaError,
  DaytonaNotFoundError,
  DaytonaSessionEndedError,
  DaytonaTimeoutError,
  type Sandbox,
} from "@daytonaio/sdk";
import { startTestStack, type TestStack } from "./harness.js";

/** Waits until cond() holds, polling. */
async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The Daytona toolbox's process side (execute, codeRun, sessions, PTY) driven by the real SDK 0.218.0. */
describe("daytona SDK 0.218.0 toolbox: process, code, sessions, pty", () => {
  let s: TestStack;
  let daytona: Daytona;
  let sbx: Sandbox;
  const extra: Sandbox[] = [];

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "3" });
    daytona = new Daytona({ apiKey: s.key, apiUrl: `${s.url}/api` });
    sbx = await daytona.create({ envVars: { SBX_VAR: "from-sandbox" } });
  });
  after(async () => {
    for (const x of [sbx, ...extra]) await x?.delete().catch(() => {});
    await daytona?.[Symbol.asyncDispose]();
    await s?.close();
  });

  test("executeCommand: exit code, combined output, cwd, sandbox and call env", async () => {
    const r = await sbx.process.executeCommand(
      "echo out; echo err >&2; echo $SBX_VAR $CALL_VAR; exit 3",
      undefined,
      {
        CALL_VAR: "from-call",
      },
    );
    assert.equal(r.exitCode, 3);
    assert.equal(r.result, "out\nerr\nfrom-sandbox from-call\n");
    assert.equal(r.artifacts?.stdout, r.result);

    const home = await sbx.process.executeCommand("pwd");
    assert.equal(home.result.trim(), "/home/user");
    assert.equal(await sbx.getUserHomeDir(), "/home/user");
    assert.equal(await sbx.getWorkDir(), "/home/user");
    const tmp = await sbx.process.executeCommand("pwd && for i in 1 2; do echo $i; done | wc -l", "/tmp");
    assert.equal(tmp.result, "/tmp\n2\n");
  });

  test("executeCommand: a server-side timeout is a DaytonaTimeoutError; bad input is a 400", async () => {
    await assert.rejects(sbx.process.executeCommand("sleep 30", undefined, undefined, 1), (e: unknown) => {
      assert.ok(e instanceof DaytonaTimeoutError, String(e));
      assert.equal((e as DaytonaError).statusCode, 408);
      return true;
    });
    await assert.rejects(
      sbx.process.executeCommand(""),
      (e: unknown) => (e as DaytonaError).statusCode === 400,
    );
    await assert.rejects(
      sbx.process.executeCommand("true", "/no/such/dir"),
      (e: unknown) => (e as DaytonaError).statusCode === 400,
    );
  });

  test("codeRun: python with argv and env; an exception gives a non-zero exit and a traceback", async () => {
    const r = await sbx.process.codeRun(
      "import os, sys\nprint('args', sys.argv[1:], os.environ['CODE_VAR'], os.environ['SBX_VAR'])",
      { argv: ["a", "b c"], env: { CODE_VAR: "cv" } },
    );
    assert.equal(r.exitCode, 0);
    assert.equal(r.result, "args ['a', 'b c'] cv from-sandbox\n");
    const bad = await sbx.process.codeRun("def f():\n  raise ValueError('nope')\nf()");
    assert.equal(bad.exitCode, 1);
    assert.match(bad.result, /Traceback[\s\S]*ValueError: nope/);
  });

  test("codeRun: javascript and typescript sandboxes", async () => {
    const [js, ts] = await Promise.all([
      daytona.create({ language: "javascript" }),
      daytona.create({ language: "typescript" }),
    ]);
    extra.push(js, ts);
    const a = await js.process.codeRun("console.log('js', process.argv.slice(1).join(','), process.env.V)", {
      argv: ["x", "y"],
      env: { V: "v1" },
    });
    assert.deepEqual([a.exitCode, a.result], [0, "js x,y v1\n"]);
    const b = await ts.process.codeRun(
      [
        "import { join } from 'node:path';",
        "interface P { n: number }",
        "const p: P = { n: 41 };",
        "console.log(join('a', 'b'), p.n + 1, process.argv[1]);",
      ].join("\n"),
      { argv: ["arg1"] },
    );
    assert.deepEqual([b.exitCode, b.result], [0, "a/b 42 arg1\n"]);
    const c = await ts.process.codeRun("const n: number = 1;\nthrow new Error('ts-boom ' + n);");
    assert.equal(c.exitCode, 1);
    assert.match(c.result, /Error: ts-boom 1/);
  });

  test("sessions: cd and export persist, split stdout/stderr, (exit 5), get/list/delete", async () => {
    const id = "sess-main";
    await sbx.process.createSession(id);
    await assert.rejects(
      sbx.process.createSession(id),
      (e: unknown) => (e as DaytonaError).statusCode === 409,
    );
    const a = await sbx.process.executeSessionCommand(id, {
      command: "cd /tmp && export SESS_V=kept && X=local",
    });
    assert.equal(a.exitCode, 0);
    const b = await sbx.process.executeSessionCommand(id, {
      command: "pwd; echo $SESS_V $X; echo to-err >&2",
    });
    assert.equal(b.exitCode, 0);
    assert.equal(b.stdout, "/tmp\nkept local\n");
    assert.equal(b.stderr, "to-err\n");
    const c = await sbx.process.executeSessionCommand(id, { command: "(exit 5)" });
    assert.equal(c.exitCode, 5);
    assert.ok(c.cmdId);
    const cmd = await sbx.process.getSessionCommand(id, c.cmdId as string);
    assert.equal(cmd.exitCode, 5);
    const logs = await sbx.process.getSessionCommandLogs(id, b.cmdId as string);
    assert.equal(logs.stdout, "/tmp\nkept local\n");
    assert.equal(logs.stderr, "to-err\n");

    const got = await sbx.process.getSession(id);
    assert.equal(got.sessionId, id);
    assert.deepEqual(
      got.commands?.map((x) => x.exitCode),
      [0, 0, 5],
    );
    const list = await sbx.process.listSessions();
    assert.ok(list.some((x) => x.sessionId === id));
    await sbx.process.deleteSession(id);
    await assert.rejects(sbx.process.getSession(id), (e: unknown) => e instanceof DaytonaNotFoundError);

    // A literal `exit` ends the session's shell, as in Daytona.
    await sbx.process.createSession("sess-exit");
    const ex = await sbx.process.executeSessionCommand("sess-exit", { command: "echo bye; exit 3" });
    assert.deepEqual([ex.stdout, ex.exitCode], ["bye\n", 3]);
    await assert.rejects(
      sbx.process.executeSessionCommand("sess-exit", { command: "true" }),
      (e: unknown) => e instanceof DaytonaSessionEndedError,
    );
    await sbx.process.deleteSession("sess-exit");
  });

  test("sessions: async command, followed logs close at the end, input, exit code", async () => {
    const id = "sess-async";
    await sbx.process.createSession(id);
    const started = await sbx.process.executeSessionCommand(id, {
      command: "echo first; read line; echo got:$line; echo oops >&2; (exit 7)",
      runAsync: true,
    });
    const cmdId = started.cmdId as string;
    assert.ok(cmdId);
    let out = "";
    let err = "";
    const follow = sbx.process.getSessionCommandLogs(
      id,
      cmdId,
      (d) => {
        out += d;
      },
      (d) => {
        err += d;
      },
    );
    await until(() => out.includes("first"));
    assert.equal((await sbx.process.getSessionCommand(id, cmdId)).exitCode, undefined);
    await sbx.process.sendSessionCommandInput(id, cmdId, "hello\n");
    await follow; // resolves only when the server closes the stream
    assert.equal(out, "first\ngot:hello\n");
    assert.equal(err, "oops\n");
    assert.equal((await sbx.process.getSessionCommand(id, cmdId)).exitCode, 7);
    // Replay of a finished command, then the session still works.
    let replay = "";
    await sbx.process.getSessionCommandLogs(
      id,
      cmdId,
      (d) => {
        replay += d;
      },
      () => {},
    );
    assert.equal(replay, "first\ngot:hello\n");
    const next = await sbx.process.executeSessionCommand(id, { command: "echo after" });
    assert.equal(next.stdout, "after\n");
    await sbx.process.deleteSession(id);
  });

  test("bad input is a clear 4xx with Daytona's error body, never a stack trace", async () => {
    const tb = `${s.url}/toolbox/${sbx.id}`;
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(tb + path, {
        method,
        headers: {
          authorization: `Bearer ${s.key}`,
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
      });
      const json = (await res.json()) as {
        statusCode: number;
        code: string;
        message: string;
        source: string;
      };
      assert.equal(json.statusCode, res.status);
      assert.doesNotMatch(json.message, /\n\s+at /);
      return [res.status, json.code] as const;
    };
    assert.deepEqual(await call("POST", "/process/execute", { command: 5 }), [400, "BAD_REQUEST"]);
    assert.deepEqual(await call("POST", "/process/execute", "{not json"), [400, "BAD_REQUEST"]);
    assert.deepEqual(await call("POST", "/process/execute", { command: "true", timeout: -1 }), [
      400,
      "BAD_REQUEST",
    ]);
    assert.deepEqual(await call("POST", "/process/execute", { command: "true", envs: { "A-B": "x" } }), [
      400,
      "BAD_REQUEST",
    ]);
    assert.deepEqual(await call("POST", "/process/code-run", { code: "1", language: "ruby" }), [
      400,
      "BAD_REQUEST",
    ]);
    assert.deepEqual(await call("GET", "/files/info"), [400, "BAD_REQUEST"]);
    assert.deepEqual(await call("GET", "/files/info?path=/../../etc"), [400, "BAD_REQUEST"]);
    assert.deepEqual(await call("POST", "/files/folder?path=x&mode=999"), [400, "BAD_REQUEST"]);
    assert.deepEqual(await call("POST", "/git/commit", { path: ".", message: "m" }), [400, "BAD_REQUEST"]);
    assert.deepEqual(await call("POST", "/process/session/none/exec", { command: "true" }), [
      404,
      "NOT_FOUND",
    ]);
    assert.deepEqual(await call("GET", "/process/session/none/command/x/logs"), [404, "NOT_FOUND"]);
    assert.deepEqual(await call("POST", "/process/pty/none/resize", { cols: 10, rows: 10 }), [
      404,
      "NOT_FOUND",
    ]);
    const res = await fetch(`${s.url}/toolbox/not-a-sandbox/process/execute`, {
      method: "POST",
      headers: { authorization: `Bearer ${s.key}`, "content-type": "application/json" },
      body: JSON.stringify({ command: "true" }),
    });
    assert.equal(res.status, 404);
  });

  test("pty: create, echo a marker, resize, exit code", async () => {
    let data = "";
    const pty = await sbx.process.createPty({
      id: "pty-1",
      cols: 100,
      rows: 30,
      envs: { PTY_VAR: "pty-env" },
      onData: (d) => {
        data += new TextDecoder().decode(d);
      },
    });
    try {
      await pty.sendInput("echo MARK-$PTY_VAR-$((6*7))\n");
      await until(() => data.includes("MARK-pty-env-42"));
      const info = await pty.resize(120, 40);
      assert.equal(info.cols, 120);
      assert.equal(info.rows, 40);
      await pty.sendInput("stty size\n");
      await until(() => data.includes("40 120"));
      const listed = await sbx.process.listPtySessions();
      assert.ok(listed.some((p) => p.id === "pty-1" && p.active));
      await pty.sendInput("exit 4\n");
      const res = await pty.wait();
      assert.equal(res.exitCode, 4);
    } finally {
      await pty.disconnect();
    }
    await assert.rejects(
      sbx.process.connectPty("no-such-pty", { onData: () => {} }),
      (e: unknown) => e instanceof DaytonaError,
    );
  });
});
