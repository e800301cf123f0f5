import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { Signal } from "@dnah/proto/process/process_pb";
import { collect, eventually, pidOf, sleep, startGuest, type TestGuest } from "./helpers.js";

let g: TestGuest;
before(async () => {
  g = await startGuest(
    {},
    { envVars: { GLOBAL_A: "from-init" }, sandboxId: "sbx123", defaultWorkdir: undefined },
  );
});
after(() => g.close());

const bash = (script: string) => ({ cmd: "/bin/bash", args: ["-c", script] });

async function rpcError(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("expected an error");
}

for (const binary of [false, true]) {
  describe(`process (${binary ? "binary" : "json"})`, () => {
    test("echo: start first, stdout, end with exit code 0 omitted", async () => {
      const r = await collect(g.process(binary).start({ process: bash("echo hello"), stdin: false }));
      assert.equal(r.events[0], "start");
      assert.ok(r.pid > 0);
      assert.equal(r.stdout, "hello\n");
      assert.deepEqual(r.end, { exitCode: 0, exited: true, status: "exit status 0", error: undefined });
      assert.equal(r.events.at(-1), "end");
    });

    test("exit code, stderr and status like Go", async () => {
      const r = await collect(
        g.process(binary).start({ process: bash("echo oops 1>&2; exit 3"), stdin: false }),
      );
      assert.equal(r.stderr, "oops\n");
      assert.deepEqual(r.end, { exitCode: 3, exited: true, status: "exit status 3", error: "exit status 3" });
    });
  });
}

describe("process", () => {
  test("pid is the command's own pid (no wrapper shell)", async () => {
    const r = await collect(g.process().start({ process: bash("echo $$"), stdin: false }));
    assert.equal(Number(r.stdout.trim()), r.pid);
  });

  test("env: PATH, HOME, USER, globals from /init, request envs win", async () => {
    const r = await collect(
      g.process().start({
        process: {
          ...bash(
            'echo "$PATH|$HOME|$USER|$LOGNAME|$E2B_SANDBOX|$E2B_SANDBOX_ID|$DNAH_SANDBOX_ID|$GLOBAL_A|$MINE"',
          ),
          envs: { MINE: "x y", GLOBAL_A: "overridden" },
        },
        stdin: false,
      }),
    );
    const [path, home, user, logname, sandbox, id, dnahId, global, mine] = r.stdout.trim().split("|");
    assert.equal(path, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    assert.ok(home && home.length > 0);
    assert.equal(user, g.user);
    assert.equal(logname, g.user);
    assert.equal(sandbox, "true");
    assert.equal(id, "sbx123");
    assert.equal(dnahId, "sbx123");
    assert.equal(global, "overridden");
    assert.equal(mine, "x y");
  });

  test("cwd: absolute, relative to home, default home; missing → invalid_argument", async () => {
    const abs = await collect(g.process().start({ process: { ...bash("pwd"), cwd: g.dir }, stdin: false }));
    assert.equal(abs.stdout.trim(), g.dir);
    const home = await collect(g.process().start({ process: bash('pwd; echo "$HOME"'), stdin: false }));
    const [pwd, homeVar] = home.stdout.trim().split("\n");
    assert.equal(pwd, homeVar);
    const err = await rpcError(
      collect(g.process().start({ process: { ...bash("pwd"), cwd: "/definitely/not/here" }, stdin: false })),
    );
    assert.equal(err.code, Code.InvalidArgument);
    assert.match(err.rawMessage, /cwd '\/definitely\/not\/here' does not exist/);
  });

  test("unknown command → invalid_argument", async () => {
    const err = await rpcError(
      collect(g.process().start({ process: { cmd: "/no/such/binary" }, stdin: false })),
    );
    assert.equal(err.code, Code.InvalidArgument);
  });

  test("stdin via SendInput, then CloseStdin ends the command", async () => {
    const client = g.process();
    const r = await collect(client.start({ process: bash("cat; echo done"), stdin: true }), async (pid) => {
      await client.sendInput({
        process: pidOf(pid),
        input: { input: { case: "stdin", value: Buffer.from("abc\n") } },
      });
      await client.sendInput({
        process: pidOf(pid),
        input: { input: { case: "stdin", value: Buffer.from("def\n") } },
      });
      await client.closeStdin({ process: pidOf(pid) });
      await client.closeStdin({ process: pidOf(pid) });
    });
    assert.equal(r.stdout, "abc\ndef\ndone\n");
    assert.equal(r.end?.exitCode, 0);
  });

  test("stdin:false → /dev/null; writing to it is internal", async () => {
    const client = g.process();
    let writeErr: ConnectError | undefined;
    const r = await collect(
      client.start({ process: bash("sleep 0.3; cat; echo eof"), stdin: false }),
      async (pid) => {
        writeErr = await rpcError(
          client.sendInput({
            process: pidOf(pid),
            input: { input: { case: "stdin", value: Buffer.from("x") } },
          }),
        );
      },
    );
    assert.equal(r.stdout, "eof\n");
    assert.equal(writeErr?.code, Code.Internal);
  });

  test("long-running command streams output as it happens", async () => {
    const times: number[] = [];
    const t0 = Date.now();
    for await (const msg of g.process().start({
      process: bash("for i in 1 2 3; do echo tick$i; sleep 0.3; done"),
      stdin: false,
    })) {
      const ev = msg.event?.event;
      if (ev?.case === "data") times.push(Date.now() - t0);
    }
    assert.equal(times.length, 3);
    assert.ok((times[2] ?? 0) - (times[0] ?? 0) >= 450, `ticks came at ${times.join(",")}`);
  });

  test("keepalive after Keepalive-Ping-Interval of silence", async () => {
    const r = await collect(
      g
        .process(false, { "Keepalive-Ping-Interval": "1" })
        .start({ process: bash("sleep 1.6; echo x"), stdin: false }),
    );
    assert.ok(r.events.includes("keepalive"), r.events.join(","));
    assert.equal(r.stdout, "x\n");
  });

  test("SendSignal SIGKILL: exitCode -1, exited false, status 'signal: killed'", async () => {
    const client = g.process();
    const r = await collect(client.start({ process: bash("sleep 30"), stdin: false }), async (pid) => {
      await client.sendSignal({ process: pidOf(pid), signal: Signal.SIGKILL });
    });
    assert.deepEqual(r.end, {
      exitCode: -1,
      exited: false,
      status: "signal: killed",
      error: "signal: killed",
    });
  });

  test("SIGTERM ends even when a grandchild holds the pipes", async () => {
    const client = g.process();
    const t0 = Date.now();
    const r = await collect(client.start({ process: bash("sleep 20 & wait"), stdin: false }), async (pid) => {
      await sleep(100);
      await client.sendSignal({ process: pidOf(pid), signal: Signal.SIGTERM });
    });
    assert.equal(r.end?.status, "signal: terminated");
    assert.ok(Date.now() - t0 < 5000);
  });

  test("unknown pid → not_found; unsupported signal → unimplemented", async () => {
    const client = g.process();
    const nf = await rpcError(client.sendSignal({ process: pidOf(999_999), signal: Signal.SIGKILL }));
    assert.equal(nf.code, Code.NotFound);
    const nf2 = await rpcError(collect(client.connect({ process: pidOf(999_999) })));
    assert.equal(nf2.code, Code.NotFound);
    const stream = client.start({ process: bash("sleep 5"), stdin: false });
    let pid = 0;
    for await (const msg of stream) {
      if (msg.event?.event.case === "start") {
        pid = msg.event.event.value.pid;
        break;
      }
    }
    const un = await rpcError(client.sendSignal({ process: pidOf(pid), signal: Signal.UNSPECIFIED }));
    assert.equal(un.code, Code.Unimplemented);
    await client.sendSignal({ process: pidOf(pid), signal: Signal.SIGKILL });
  });

  test("Connect to a running process gets start + live output + end; List shows it", async () => {
    const client = g.process();
    const marker = `${g.dir}/go`;
    const started = client.start({
      process: {
        ...bash(`while [ ! -e ${marker} ]; do sleep 0.05; done; echo after-connect; exit 7`),
        envs: { K: "V" },
      },
      stdin: false,
      tag: "my-tag",
    });
    const it = started[Symbol.asyncIterator]();
    const first = await it.next();
    const startEv = first.value?.event?.event;
    assert.equal(startEv?.case, "start");
    const pid = (startEv.value as { pid: number }).pid;

    const listed = await client.list({});
    const info = listed.processes.find((p) => p.pid === pid);
    assert.ok(info, "process listed");
    assert.equal(info.tag, "my-tag");
    assert.equal(info.config?.cmd, "/bin/bash");
    assert.deepEqual(info.config?.envs, { K: "V" });

    const connected = collect(client.connect({ process: pidOf(pid) }));
    await sleep(200);
    await g.http("GET", "/health");
    const { writeFile } = await import("node:fs/promises");
    await writeFile(marker, "");
    const c = await connected;
    assert.equal(c.pid, pid);
    assert.equal(c.events[0], "start");
    assert.equal(c.stdout, "after-connect\n");
    assert.equal(c.end?.exitCode, 7);

    const rest = await collect({ [Symbol.asyncIterator]: () => it });
    assert.equal(rest.stdout, "after-connect\n");
    assert.equal(rest.end?.exitCode, 7);
    assert.equal(
      (await client.list({})).processes.find((p) => p.pid === pid),
      undefined,
    );

    // A late Connect within the retention window gets start + the retained end.
    const late = await collect(client.connect({ process: pidOf(pid) }));
    assert.deepEqual(late.events, ["start", "end"]);
    assert.equal(late.end?.exitCode, 7);
  });

  test("client disconnect does not kill the process", async () => {
    const client = g.process();
    const marker = `${g.dir}/survived`;
    const ac = new AbortController();
    let pid = 0;
    try {
      for await (const msg of client.start(
        { process: bash(`sleep 0.8; touch ${marker}`), stdin: false },
        { signal: ac.signal },
      )) {
        if (msg.event?.event.case === "start") {
          pid = msg.event.event.value.pid;
          ac.abort();
        }
      }
    } catch {
      // aborted on purpose
    }
    assert.ok(pid > 0);
    await eventually(() => (existsSync(marker) ? true : undefined), 5000);
  });

  test("Connect-Timeout-Ms on Start kills the process", async () => {
    const client = g.process();
    const marker = `${g.dir}/not-created`;
    let pid = 0;
    const err = await rpcError(
      collect(
        client.start({ process: bash(`sleep 1.5; touch ${marker}`), stdin: false }, { timeoutMs: 500 }),
        (p) => {
          pid = p;
        },
      ),
    );
    assert.equal(err.code, Code.DeadlineExceeded);
    assert.ok(pid > 0);
    const late = await eventually(async () => {
      const r = await collect(client.connect({ process: pidOf(pid) }));
      return r.end ? r : undefined;
    });
    assert.equal(late.end?.status, "signal: killed");
    await sleep(1500);
    assert.equal(existsSync(marker), false);
  });

  test("unknown user → unauthenticated", async () => {
    const auth = `Basic ${Buffer.from("nobody-such-user:").toString("base64")}`;
    const err = await rpcError(
      collect(g.process(false, { Authorization: auth }).start({ process: bash("true"), stdin: false })),
    );
    assert.equal(err.code, Code.Unauthenticated);
    assert.match(err.rawMessage, /invalid username/);
  });

  test("StreamInput over the Connect protocol", async () => {
    const client = g.process(true);
    let pid = 0;
    const done = collect(client.start({ process: bash("head -c 6"), stdin: true }), (p) => {
      pid = p;
    });
    await eventually(() => (pid > 0 ? pid : undefined));
    async function* input() {
      yield { event: { case: "start" as const, value: { process: pidOf(pid) } } };
      yield {
        event: {
          case: "data" as const,
          value: { input: { input: { case: "stdin" as const, value: Buffer.from("abcdef") } } },
        },
      };
    }
    await client.streamInput(input());
    const r = await done;
    assert.equal(r.stdout, "abcdef");
  });
});
