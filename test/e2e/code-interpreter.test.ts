import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { NotFoundError, Sandbox, TimeoutError } from "@e2b/code-interpreter";
import pg from "pg";
import { DATABASE_URL, eventually, startTestStack, type TestStack } from "./harness.js";

/**
 * The real, unmodified `@e2b/code-interpreter` SDK against dnah: the `code-interpreter`
 * template's server (guest/code-interpreter/server.py) reached through the gateway's E2B proxy.
 */
describe("@e2b/code-interpreter 2.8.0", () => {
  let s: TestStack;
  let sbx: Sandbox;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0" });
    sbx = await Sandbox.create("code-interpreter", {
      apiKey: s.key,
      apiUrl: s.url,
      sandboxUrl: s.url,
      envs: { GLOBAL_VAR: "from-create" },
      requestTimeoutMs: 120_000,
    });
  });
  after(async () => {
    await s?.close();
  });

  test("python state persists across runCode calls", async () => {
    const first = await sbx.runCode("x = 41\nx");
    assert.equal(first.error, undefined);
    assert.equal(first.text, "41");
    const second = await sbx.runCode("x + 1");
    assert.equal(second.text, "42");
    assert.ok(
      typeof second.executionCount === "number" && second.executionCount > (first.executionCount ?? 0),
      `execution count ${first.executionCount} then ${second.executionCount}`,
    );
  });

  test("onStdout/onStderr stream while the cell still runs", async () => {
    // The cell waits for a file that the test writes only once it has seen the first line: if
    // output were delivered at the end of the cell, it would run into its own deadline.
    const marker = `/tmp/go-${Date.now()}`;
    const stdout: string[] = [];
    const stderr: string[] = [];
    const exec = await sbx.runCode(
      [
        "import os, sys, time",
        "print('waiting', flush=True)",
        "print('to stderr', file=sys.stderr, flush=True)",
        "deadline = time.time() + 45",
        `while not os.path.exists(${JSON.stringify(marker)}) and time.time() < deadline:`,
        "    time.sleep(0.05)",
        `print('go' if os.path.exists(${JSON.stringify(marker)}) else 'not streamed')`,
      ].join("\n"),
      {
        onStdout: async (m) => {
          stdout.push(m.line);
          if (m.line.includes("waiting")) await sbx.files.write(marker, "");
        },
        onStderr: (m) => {
          stderr.push(m.line);
        },
        timeoutMs: 60_000,
      },
    );
    assert.equal(exec.error, undefined);
    assert.deepEqual(stdout.join("").split("\n").filter(Boolean), ["waiting", "go"]);
    assert.deepEqual(stderr, ["to stderr\n"]);
    assert.deepEqual(exec.logs.stdout.join(""), "waiting\ngo\n");
  });

  test("an exception is execution.error with name, value and traceback", async () => {
    const exec = await sbx.runCode("def boom():\n    return 1 / 0\nboom()");
    assert.ok(exec.error, "an error");
    assert.equal(exec.error.name, "ZeroDivisionError");
    assert.equal(exec.error.value, "division by zero");
    // IPython's traceback, ANSI colours included (as E2B's server sends it).
    const plain = exec.error.traceback.replace(/\x1b\[[0-9;]*m/g, "");
    assert.match(plain, /----> 3 boom\(\)/);
    assert.match(plain, /ZeroDivisionError: division by zero/);
    assert.equal(exec.text, undefined);
  });

  test("a matplotlib plot comes back as a png result", async () => {
    const exec = await sbx.runCode(
      "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()",
    );
    assert.equal(exec.error, undefined, exec.error?.traceback);
    const png = exec.results.find((r) => r.png);
    assert.ok(png?.png, `a png among ${JSON.stringify(exec.results.map((r) => r.formats()))}`);
    const bytes = Buffer.from(png.png, "base64");
    assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.equal(png.isMainResult, false);
  });

  test("a pandas DataFrame gives text and html", async () => {
    const exec = await sbx.runCode("import pandas as pd\npd.DataFrame({'name': ['a', 'b'], 'n': [1, 2]})");
    assert.equal(exec.error, undefined, exec.error?.traceback);
    const main = exec.results.find((r) => r.isMainResult);
    assert.ok(main);
    assert.match(main.text ?? "", /name\s+n/);
    assert.match(main.html ?? "", /<table/);
  });

  test("env vars: create-time envs, per-call envs, reverted after the call", async () => {
    const code = "import os\nprint(os.environ.get('GLOBAL_VAR'), os.environ.get('CELL_VAR'))";
    const withVar = await sbx.runCode(code, { envs: { CELL_VAR: "cell" } });
    assert.equal(withVar.logs.stdout.join(""), "from-create cell\n");
    const without = await sbx.runCode(code);
    assert.equal(without.logs.stdout.join(""), "from-create None\n");
  });

  test("createCodeContext({cwd}) isolates state; list and remove", async () => {
    const ctx = await sbx.createCodeContext({ cwd: "/tmp" });
    assert.equal(ctx.cwd, "/tmp");
    assert.equal(ctx.language, "python");
    const inCtx = await sbx.runCode("import os\nonly_here = 1\nos.getcwd()", { context: ctx });
    assert.equal(inCtx.text, "/tmp");
    const outside = await sbx.runCode("only_here");
    assert.equal(outside.error?.name, "NameError");
    assert.ok((await sbx.listCodeContexts()).some((c) => c.id === ctx.id));
    await sbx.removeCodeContext(ctx);
    assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id));
    // A short requestTimeoutMs: the SDK leaves that timer running when the answer is an error.
    await assert.rejects(sbx.runCode("1", { context: ctx, requestTimeoutMs: 5_000 }), NotFoundError);
  });

  test("JavaScript: state across cells, top-level await, console output, errors", async () => {
    const js = await sbx.createCodeContext({ language: "js" });
    assert.equal(js.language, "javascript");
    const a = await sbx.runCode(
      "const base = 40; function add(n) { return base + n }\nconsole.log('hi from js')",
      {
        context: js,
      },
    );
    assert.equal(a.error, undefined);
    assert.deepEqual(a.logs.stdout, ["hi from js\n"]);
    const b = await sbx.runCode("const v = await new Promise((r) => setTimeout(() => r(2), 20));\nadd(v)", {
      context: js,
    });
    assert.equal(b.error, undefined, b.error?.traceback);
    assert.equal(b.text, "42");
    const c = await sbx.runCode("null.x", { context: js });
    assert.equal(c.error?.name, "TypeError");
  });

  test("TypeScript: types are stripped and state persists", async () => {
    const first = await sbx.runCode(
      "interface Pt { x: number; y: number }\nconst p: Pt = { x: 3, y: 4 };\nconst len = (q: Pt): number => Math.hypot(q.x, q.y);",
      { language: "typescript" },
    );
    assert.equal(first.error, undefined, first.error?.traceback);
    const second = await sbx.runCode("len(p) satisfies number", { language: "ts" });
    assert.equal(second.error, undefined, second.error?.traceback);
    assert.equal(second.text, "5");
  });

  test("timeoutMs on a long cell raises TimeoutError and interrupts the cell", async () => {
    await assert.rejects(sbx.runCode("import time\ntime.sleep(120)", { timeoutMs: 2_000 }), TimeoutError);
    // Had the cell not been interrupted, this one would wait behind it for two minutes.
    const next = await sbx.runCode("'still here'", { timeoutMs: 45_000 });
    assert.equal(next.text, "still here");
  });

  test("bad requests are 4xx with a plain-text reason", async () => {
    const post = (body: unknown) =>
      fetch(`${s.url}/execute`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "e2b-sandbox-id": sbx.sandboxId,
          "e2b-sandbox-port": "49999",
        },
        body: JSON.stringify(body),
      });
    const both = await post({ code: "1", context_id: "x", language: "python" });
    assert.equal(both.status, 400);
    assert.equal(await both.text(), "Only one of context_id or language can be provided");
    const noCode = await post({ language: "python" });
    assert.equal(noCode.status, 400);
    assert.match(await noCode.text(), /code must be a string/);
    const lang = await post({ code: "1", language: "cobol" });
    assert.equal(lang.status, 400);
    assert.match(await lang.text(), /Unsupported language/);
    const env = await post({ code: "1", env_vars: { A: 1 } });
    assert.equal(env.status, 400);
    await env.text();
    await assert.rejects(sbx.createCodeContext({ cwd: "/no/such/dir" }), /400/);
  });

  test("sandbox.commands still work in this template", async () => {
    const r = await sbx.commands.run("python3 -c 'import pandas, matplotlib; print(\"ok\")' && whoami");
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "ok\nuser\n");
  });

  test("a warm-pool sandbox is ready when claimed and sees the claim's env vars", async () => {
    // The harness sizes only base's pool: give this template one warm sandbox in the stack's
    // own schema (named after its state folder).
    const schema = `e2e_${s.stateDir.split("dnah-e2e-")[1]}`;
    const db = new pg.Client({ connectionString: DATABASE_URL });
    await db.connect();
    const setTarget = (n: number) =>
      db.query(`UPDATE ${schema}.templates SET pool_target = $1 WHERE id = 'code-interpreter'`, [n]);
    let claimed: Sandbox | undefined;
    try {
      await setTarget(1);
      const pooled = await eventually(async () => {
        const { rows } = await db.query<{ id: string }>(
          `SELECT id FROM ${schema}.sandboxes WHERE pooled AND state = 'running' AND template_id = 'code-interpreter'`,
        );
        return rows[0]?.id;
      }, 90_000);
      claimed = await Sandbox.create("code-interpreter-v1", {
        apiKey: s.key,
        apiUrl: s.url,
        sandboxUrl: s.url,
        envs: { POOL_VAR: "from-claim" },
      });
      await setTarget(0);
      assert.equal(claimed.sandboxId, pooled, "the warm sandbox was claimed");
      // No retry: the server had to be serving before the sandbox counted as booted, and the
      // env vars arrived (with /init) after it started.
      const exec = await claimed.runCode("import os\nos.environ.get('POOL_VAR')");
      assert.equal(exec.error, undefined, exec.error?.traceback);
      assert.equal(exec.text, "from-claim");
    } finally {
      await setTarget(0).catch(() => undefined);
      await claimed?.kill().catch(() => undefined);
      await db.end();
    }
  });

  test("the agent restarts the server when it dies; its output is logged", async () => {
    const log = await sbx.commands.run("cat /var/log/dnah/start-command.log", { user: "root" });
    assert.match(log.stdout, /code interpreter listening/);
    // Kill the server and wait until it is gone (the bracket keeps pgrep from matching the
    // shell that runs this command).
    await sbx.commands.run(
      "pid=$(pgrep -u user -f 'code-interpreter/serve[r].py'); kill $pid; " +
        "for i in $(seq 300); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1",
    );
    // Poll the server's /health through the proxy (502 while nothing listens), then run code.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const res = await fetch(`${s.url}/health`, {
        headers: { "e2b-sandbox-id": sbx.sandboxId, "e2b-sandbox-port": "49999" },
      }).catch(() => undefined);
      await res?.body?.cancel();
      if (res?.status === 200) break;
      assert.ok(Date.now() < deadline, `the server did not come back (last status ${res?.status})`);
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal((await sbx.runCode("'back'")).text, "back");
    const after = await sbx.commands.run("cat /var/log/dnah/start-command.log", { user: "root" });
    assert.equal(after.stdout.match(/code interpreter listening/g)?.length, 2);
  });
});
