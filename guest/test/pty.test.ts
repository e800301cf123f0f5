import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { collect, eventually, pidOf, startGuest, type TestGuest } from "./helpers.js";

let g: TestGuest;
before(async () => {
  g = await startGuest();
});
after(() => g.close());

const sdkPty = (cols: number, rows: number) => ({
  process: {
    cmd: "/bin/bash",
    args: ["-i", "-l"],
    envs: { TERM: "xterm-256color", LANG: "C.UTF-8", LC_ALL: "C.UTF-8" },
  },
  pty: { size: { cols, rows } },
});

const send = (client: ReturnType<TestGuest["process"]>, pid: number, s: string) =>
  client.sendInput({ process: pidOf(pid), input: { input: { case: "pty", value: Buffer.from(s) } } });

test("pty: echo through the terminal, size from the request, pid is the shell's", async () => {
  const client = g.process();
  const r = await collect(client.start(sdkPty(120, 40)), async (pid) => {
    await send(client, pid, "echo pty-$((40+2)); stty size; echo pid=$$; tty; exit 4\n");
  });
  assert.match(r.pty, /pty-42/);
  assert.match(r.pty, /40 120/);
  assert.match(r.pty, new RegExp(`pid=${r.pid}\\b`));
  assert.match(r.pty, /\/dev\/pts\/\d+/);
  assert.equal(r.end?.exitCode, 4);
  assert.equal(r.stdout, "");
});

test("pty: Update resizes (SIGWINCH reaches the shell)", async () => {
  const client = g.process();
  let output = "";
  const stream = client.start(sdkPty(80, 24));
  let pid = 0;
  const done = (async () => {
    for await (const msg of stream) {
      const ev = msg.event?.event;
      if (ev?.case === "start") pid = ev.value.pid;
      if (ev?.case === "data" && ev.value.output.case === "pty")
        output += Buffer.from(ev.value.output.value).toString();
    }
  })();
  await eventually(() => (pid > 0 ? pid : undefined));
  await send(client, pid, "stty size\n");
  await eventually(() => (output.includes("24 80") ? true : undefined));
  await client.update({ process: pidOf(pid), pty: { size: { cols: 132, rows: 50 } } });
  await send(client, pid, "stty size; exit\n");
  await done;
  assert.match(output, /50 132/);
});

test("pty: stdin input and CloseStdin are refused; kill ends it as killed", async () => {
  const client = g.process();
  let stdinErr: ConnectError | undefined;
  let closeErr: ConnectError | undefined;
  const r = await collect(client.start(sdkPty(80, 24)), async (pid) => {
    stdinErr = await client
      .sendInput({ process: pidOf(pid), input: { input: { case: "stdin", value: Buffer.from("x") } } })
      .then(() => undefined, ConnectError.from);
    closeErr = await client.closeStdin({ process: pidOf(pid) }).then(() => undefined, ConnectError.from);
    await client.sendSignal({ process: pidOf(pid), signal: 9 });
  });
  assert.equal(stdinErr?.code, Code.Internal);
  assert.equal(closeErr?.code, Code.Unknown);
  assert.deepEqual(r.end, { exitCode: -1, exited: false, status: "signal: killed", error: "signal: killed" });
});

test("pty: a command that does not exist reports 127 through the terminal", async () => {
  const r = await collect(
    g.process().start({ process: { cmd: "/no/such/thing" }, pty: { size: { cols: 80, rows: 24 } } }),
  );
  assert.equal(r.end?.exitCode, 127);
  assert.match(r.pty, /no\/such\/thing/);
});
