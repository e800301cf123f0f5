import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { DATABASE_URL, startTestStack, type TestStack } from "../../../test/e2e/harness.js";
import { exitCodeOf, keyValues } from "../src/api.js";
import { fileRoute } from "../src/commands/files.js";
import { progressLine } from "../src/progress.js";

type Json = Record<string, unknown>;
const BIN = fileURLToPath(new URL("../bin/dnah.js", import.meta.url));
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The real `dnah` binary as a child process (asynchronously: the stack it talks to runs in
 * this process), with the stack's URL and key unless `env` says otherwise.
 */
function dnah(s: TestStack, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { PATH: process.env.PATH ?? "", DNAH_URL: s.url, DNAH_API_KEY: s.key, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", reject);
    child.on("close", (code) =>
      resolve({
        code,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      }),
    );
  });
}

/** A run that must succeed; its stdout parsed as JSON. */
async function json<T = Json>(s: TestStack, args: string[], env: Record<string, string> = {}): Promise<T> {
  const r = await dnah(s, [...args, "--json"], env);
  assert.equal(r.code, 0, `dnah ${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** A failed run: one `dnah: …` line on stderr, no stack trace, the expected exit code. */
function failedWith(r: Run, code: number, pattern: RegExp): void {
  assert.equal(r.code, code, `exit code (stderr: ${r.stderr})`);
  assert.match(r.stderr, /^dnah: [^\n]+\n$/, "one line on stderr");
  assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  assert.match(r.stderr, pattern);
}

/**
 * Runs `dnah sandbox shell <id>` under a real pseudo-terminal (python3's pty module: node has
 * none) of rows×cols: once the remote prompt shows, types `lines` one at a time, each after the
 * output of the one before matched its pattern; resizes the terminal (the kernel sends SIGWINCH)
 * where a step asks for it. Returns the exit status and everything the terminal showed.
 */
function underPty(
  s: TestStack,
  id: string,
  size: { rows: number; cols: number },
  steps: { resize?: { rows: number; cols: number }; type: string; until: string }[],
): Promise<{ status: number; output: string }> {
  const script = `
import json, os, pty, re, struct, fcntl, termios, sys, select
cfg = json.loads(sys.argv[1])
def winsize(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
pid, fd = pty.fork()
if pid == 0:
    os.execv(cfg["node"], [cfg["node"], cfg["bin"], "sandbox", "shell", cfg["id"]])
winsize(fd, cfg["rows"], cfg["cols"])
out = b""
def read_until(pattern, start):
    global out
    while not re.search(pattern.encode(), out[start:]):
        r, _, _ = select.select([fd], [], [], 60)
        if not r:
            raise SystemExit("timed out waiting for " + pattern + " in " + repr(out[-400:]))
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            raise SystemExit("the terminal ended before " + pattern + ": " + repr(out[-400:]))
        out += chunk
read_until(r"[$#] ", 0)
for step in cfg["steps"]:
    if "resize" in step:
        winsize(fd, step["resize"]["rows"], step["resize"]["cols"])
    mark = len(out)
    os.write(fd, step["type"].encode())
    read_until(step["until"], mark)
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
print(json.dumps({"status": os.waitstatus_to_exitcode(status), "output": out.decode("utf-8", "replace")}))
`;
  const cfg = { node: process.execPath, bin: BIN, id, ...size, steps };
  return new Promise((resolve, reject) => {
    const child = spawn("python3", ["-c", script, JSON.stringify(cfg)], {
      env: { PATH: process.env.PATH ?? "", DNAH_URL: s.url, DNAH_API_KEY: s.key, TERM: "xterm" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0)
        reject(new Error(`pty driver failed (${code}): ${Buffer.concat(err).toString("utf8")}`));
      else resolve(JSON.parse(Buffer.concat(out).toString("utf8")) as { status: number; output: string });
    });
  });
}

/** A WebSocket to the gateway's terminal route: every frame it receives, in order. */
function terminal(url: string, headers: Record<string, string>) {
  const ws = new WebSocket(url, { headers });
  const frames: { binary: boolean; data: Buffer }[] = [];
  let wake: (() => void) | undefined;
  ws.on("message", (data: Buffer, binary: boolean) => {
    frames.push({ binary, data });
    wake?.();
  });
  ws.on("close", () => wake?.());
  const closed = new Promise<number>((resolve) => ws.on("close", (code: number) => resolve(code)));
  const opened = new Promise<void>((resolve, reject) => {
    ws.on("open", () => resolve());
    ws.on("error", reject);
    ws.on("unexpected-response", (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
  /** Waits for terminal output (binary frames after `from`) matching `re`. */
  const output = async (re: RegExp, from = 0): Promise<string> => {
    for (;;) {
      const text = Buffer.concat(
        frames
          .slice(from)
          .filter((f) => f.binary)
          .map((f) => f.data),
      ).toString("utf8");
      if (re.test(text)) return text;
      if (ws.readyState === WebSocket.CLOSED) throw new Error(`closed before ${re}: ${text.slice(-300)}`);
      await new Promise<void>((r) => {
        wake = r;
      });
    }
  };
  /** Waits for the next text frame after `from`. */
  const control = async (from = 0): Promise<Json> => {
    for (;;) {
      const f = frames.slice(from).find((x) => !x.binary);
      if (f !== undefined) return JSON.parse(f.data.toString("utf8")) as Json;
      if (ws.readyState === WebSocket.CLOSED) throw new Error("closed before a text frame");
      await new Promise<void>((r) => {
        wake = r;
      });
    }
  };
  return { ws, frames, opened, closed, output, control };
}

/** The HTTP status a WebSocket upgrade is refused with. */
function refusedWith(url: string, headers: Record<string, string>): Promise<{ status: number; body: Json }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on("open", () => reject(new Error("upgraded")));
    ws.on("error", () => undefined);
    ws.on("unexpected-response", (_req, res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as Json,
        }),
      );
    });
  });
}

describe("CLI helpers (pure)", () => {
  test("fileRoute: the share's paths go through the share route, others through the agent", () => {
    assert.deepEqual(fileRoute("sb1", "/mnt/dnah-share/a b/c.txt"), {
      url: "/v1/sandboxes/sb1/share/a%20b/c.txt",
      share: true,
    });
    assert.deepEqual(fileRoute("sb1", "/mnt/dnah-share/./x/../y.bin"), {
      url: "/v1/sandboxes/sb1/share/y.bin",
      share: true,
    });
    assert.deepEqual(fileRoute("sb1", "/mnt/dnah-shared/y"), {
      url: "/v1/sandboxes/sb1/files?path=%2Fmnt%2Fdnah-shared%2Fy",
      share: false,
    });
    assert.deepEqual(fileRoute("sb1", "notes.txt"), {
      url: "/v1/sandboxes/sb1/files?path=notes.txt",
      share: false,
    });
    assert.throws(() => fileRoute("sb1", "/mnt/dnah-share/"), /is a folder/);
  });

  test("progressLine, keyValues, exitCodeOf", () => {
    assert.equal(
      progressLine("put x", 5 * 1024 * 1024, 10 * 1024 * 1024, 1000),
      "put x [###############---------------]  50%  5.0/10.0 MiB  5.0 MiB/s",
    );
    assert.equal(progressLine("get y", 3 * 1024 * 1024, undefined, 2000), "get y 3.0 MiB  1.5 MiB/s");
    assert.deepEqual(keyValues(["a=1", "b=x=y"], "--env"), { a: "1", b: "x=y" });
    assert.throws(
      () => keyValues(["=1"], "--env"),
      (e: { exitCode?: number }) => e.exitCode === 2,
    );
    assert.equal(exitCodeOf(new Error("x")), 1);
  });
});

describe("the dnah CLI against a real stack", () => {
  let s: TestStack;
  let dir: string;
  let schema: string;
  const leftovers = new Set<string>();

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "2" });
    dir = await mkdtemp(join(tmpdir(), "dnah-cli-"));
    const { rows } = await s.db.query<{ schema: string }>("SELECT current_schema() AS schema");
    schema = rows[0]!.schema;
  });
  after(async () => {
    for (const id of leftovers)
      await s.api(`/v1/sandboxes/${id}`, { method: "DELETE" }).catch(() => undefined);
    await s?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("sandbox create, list, exec, files, snapshot, fork, pause, resume, kill", async () => {
    const created = await json(s, ["sandbox", "create", "--metadata", "suite=cli", "--metadata", "n=1"]);
    const id = created.sandboxId as string;
    leftovers.add(id);
    assert.equal(created.state, "running");
    assert.deepEqual(created.metadata, { suite: "cli", n: "1" });

    const listed = await json<Json[]>(s, ["sandbox", "list"]);
    assert.ok(
      listed.some((x) => x.sandboxId === id && x.state === "running"),
      "list --json has it",
    );
    const tableRun = await dnah(s, ["sandbox", "list", "--state", "running"]);
    assert.equal(tableRun.code, 0, tableRun.stderr);
    assert.match(tableRun.stdout, /^ID\s+STATE\s+TEMPLATE/);
    assert.match(tableRun.stdout, new RegExp(`^${id}\\s+running\\s+base\\s.*suite=cli`, "m"));

    // exec: both streams, and the command's exit code is dnah's.
    const ex = await dnah(s, ["sandbox", "exec", id, "--", "echo out-$((40+2)); echo err >&2; exit 7"]);
    assert.equal(ex.code, 7, ex.stderr);
    assert.equal(ex.stdout, "out-42\n");
    assert.equal(ex.stderr, "err\n");
    const words = await dnah(s, ["sandbox", "exec", id, "ls", "-d", "/mnt/dnah-share"]);
    assert.equal(words.code, 0, `options after the id are the command's: ${words.stderr}`);
    assert.equal(words.stdout, "/mnt/dnah-share\n");

    // files: a few MiB both ways, through the share and through the agent.
    const data = randomBytes(3 * 1024 * 1024 + 123);
    const local = join(dir, "up.bin");
    await writeFile(local, data);
    for (const remote of ["/mnt/dnah-share/sub/big.bin", "/tmp/cli/big.bin"]) {
      const put = await json(s, ["files", "put", id, local, remote]);
      assert.deepEqual(put, { path: remote, bytes: data.length, sha256: sha256(data) });
      const inside = await dnah(s, ["sandbox", "exec", id, "--", `sha256sum ${remote} | cut -d' ' -f1`]);
      assert.equal(inside.stdout.trim(), sha256(data), `the sandbox has the bytes at ${remote}`);
      const back = join(dir, `back-${remote.startsWith("/mnt") ? "share" : "agent"}.bin`);
      const got = await json(s, ["files", "get", id, remote, back]);
      assert.deepEqual(got, { path: back, bytes: data.length, sha256: sha256(data) });
      assert.ok((await readFile(back)).equals(data), `${remote}: the same bytes came back`);
    }
    failedWith(
      await dnah(s, ["files", "get", id, "/tmp/none-such", join(dir, "x")]),
      3,
      /not found|no such/i,
    );
    failedWith(await dnah(s, ["files", "put", id, join(dir, "none-such"), "/tmp/x"]), 1, /cannot read/);

    // snapshot and fork
    const snap = await json(s, ["sandbox", "snapshot", id, "--name", `cli-${id}`]);
    assert.equal(snap.sandboxId, id);
    assert.equal(snap.name, `cli-${id}`);
    const plainSnap = await dnah(s, ["sandbox", "snapshot", id]);
    assert.equal(plainSnap.code, 0, plainSnap.stderr);
    assert.match(plainSnap.stdout, /^\S+\n$/, "the snapshot id alone");
    const forked = await json<{ sandbox?: Json }[]>(s, ["sandbox", "fork", id]);
    assert.equal(forked.length, 1);
    const clone = forked[0]!.sandbox!.sandboxId as string;
    leftovers.add(clone);
    assert.notEqual(clone, id);
    const inClone = await dnah(s, ["sandbox", "exec", clone, "--", "sha256sum /mnt/dnah-share/sub/big.bin"]);
    assert.match(inClone.stdout, new RegExp(sha256(data)), "the clone has the share's file");
    const killedClone = await dnah(s, ["sandbox", "kill", clone]);
    assert.equal(killedClone.code, 0, killedClone.stderr);
    assert.equal(killedClone.stdout, `${clone}\n`);
    leftovers.delete(clone);

    // pause, resume
    assert.equal((await json(s, ["sandbox", "pause", id])).state, "paused");
    failedWith(await dnah(s, ["sandbox", "exec", id, "--", "true"]), 1, /paused/);
    assert.equal((await json(s, ["sandbox", "resume", id])).state, "running");
    assert.equal((await dnah(s, ["sandbox", "exec", id, "--", "exit 0"])).code, 0);

    // kill; then it is gone (exit code 3)
    assert.equal((await dnah(s, ["sandbox", "kill", id])).code, 0);
    leftovers.delete(id);
    failedWith(await dnah(s, ["sandbox", "kill", id]), 3, /not found/);
  });

  test("exit codes: 3 for an unknown sandbox, 4 for a bad key, 2 for bad usage", async () => {
    failedWith(await dnah(s, ["sandbox", "exec", "sbx-none-such", "--", "true"]), 3, /not found/);
    failedWith(await dnah(s, ["sandbox", "pause", "sbx-none-such"]), 3, /not found/);
    failedWith(await dnah(s, ["sandbox", "shell", "sbx-none-such"]), 3, /not found/);
    failedWith(await dnah(s, ["sandbox", "list"], { DNAH_API_KEY: "dnah_not_a_key" }), 4, /./);
    failedWith(await dnah(s, ["sandbox", "list"], { DNAH_API_KEY: "" }), 4, /DNAH_API_KEY/);
    failedWith(await dnah(s, ["sandbox", "create", "--bogus"]), 2, /unknown option/);
    failedWith(await dnah(s, ["sandbox", "create", "--type", "forever"]), 2, /--type/);
    failedWith(await dnah(s, ["keys", "create"], { DATABASE_URL }), 2, /--name/);
  });

  test("keys create, list, revoke: a created key works, a revoked one gets 401", async () => {
    const db = { DATABASE_URL, DNAH_DB_SCHEMA: schema };
    const k1 = await json(s, ["keys", "create", "--name", "cli-one"], db);
    const k2 = await json(s, ["keys", "create", "--name", "cli-two"], db);
    assert.match(k1.key as string, /^dnah_[0-9A-Za-z]{40}$/);
    const plain = await dnah(s, ["keys", "create", "--name", "cli-plain"], db);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /^dnah_[0-9A-Za-z]{40}\n$/, "the key alone on stdout");

    assert.equal((await dnah(s, ["sandbox", "list"], { DNAH_API_KEY: k1.key as string })).code, 0);

    const revoked = await dnah(s, ["keys", "revoke", k2.id as string], db);
    assert.equal(revoked.code, 0, revoked.stderr);
    const keys = await json<Json[]>(s, ["keys", "list"], db);
    const byId = new Map(keys.map((k) => [k.id, k]));
    assert.equal(byId.get(k1.id)?.revokedAt, null);
    assert.equal(byId.get(k1.id)?.name, "cli-one");
    assert.ok(typeof byId.get(k2.id)?.revokedAt === "string", "k2 revoked");
    assert.ok(
      keys.every((k) => !("key" in k)),
      "plain keys are never listed",
    );
    const tableRun = await dnah(s, ["keys", "list"], db);
    assert.match(tableRun.stdout, new RegExp(`^${k2.id}\\s+cli-two\\s+revoked`, "m"));

    // The gateway refuses the revoked key (never used before, so no cached "live" answer).
    assert.equal(
      (await fetch(`${s.url}/v1/sandboxes`, { headers: { authorization: `Bearer ${k2.key}` } })).status,
      401,
    );
    failedWith(await dnah(s, ["sandbox", "list"], { DNAH_API_KEY: k2.key as string }), 4, /./);
    failedWith(await dnah(s, ["keys", "revoke", k2.id as string], db), 3, /no live API key/);
    failedWith(await dnah(s, ["keys", "list"], {}), 2, /DATABASE_URL/);
  });

  test("template list --json: the built templates with size and build time", async () => {
    const env = process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {};
    const list = await json<Json[]>(s, ["template", "list"], env);
    const base = list.find((t) => t.templateId === "base");
    assert.ok(base, `base is built: ${JSON.stringify(list)}`);
    assert.ok((base.sizeBytes as number) > 10 * 1024 * 1024, "a real rootfs");
    assert.ok(!Number.isNaN(Date.parse(base.builtAt as string)));
  });

  test("sandbox shell under a real PTY: output, size, resize, exit code", async () => {
    const id = (await json(s, ["sandbox", "create"])).sandboxId as string;
    leftovers.add(id);
    const r = await underPty(s, id, { rows: 33, cols: 111 }, [
      { type: "echo $((6*7)); stty size\r", until: "[\\r\\n]33 111\\r*\\n" },
      { resize: { rows: 40, cols: 120 }, type: "stty size\r", until: "[\\r\\n](40 120|33 111)\\r*\\n" },
      { type: "stty size; exit 5\r", until: "40 120" },
    ]);
    // The local terminal adds a \r to the remote's \r\n (raw mode keeps output processing).
    assert.match(r.output, /[\r\n]42\r*\n/, "the shell computed 6*7");
    assert.match(r.output, /[\r\n]33 111\r*\n/, "the remote terminal has the local size");
    assert.match(r.output, /[\r\n]40 120\r*\n/, "a local resize reached the remote terminal");
    assert.equal(r.status, 5, "dnah exits with the shell's code");
    await s.api(`/v1/sandboxes/${id}`, { method: "DELETE" });
    leftovers.delete(id);
  });

  test("gateway: GET /v1/sandboxes/{id}/terminal (resize frame, bad frame, exit frame, refusals)", async () => {
    const id = ((await s.json<Json>("/v1/sandboxes", { method: "POST", body: "{}" })).body
      .sandboxId as string)!;
    leftovers.add(id);
    const base = `${s.url.replace(/^http/, "ws")}/v1/sandboxes/${id}/terminal`;
    const auth = { authorization: `Bearer ${s.key}` };

    const t = terminal(`${base}?cols=50&rows=20&cwd=/tmp`, auth);
    await t.opened;
    t.ws.send(Buffer.from("pwd; stty size\n"));
    await t.output(/\/tmp\r?\n20 50\r?\n/);
    // Resize, then input: the server applies them in the order they came.
    t.ws.send(JSON.stringify({ resize: { cols: 90, rows: 30 } }));
    let mark = t.frames.length;
    t.ws.send(Buffer.from("stty size\n"));
    await t.output(/30 90\r?\n/, mark);
    mark = t.frames.length;
    t.ws.send("not json");
    assert.deepEqual(await t.control(mark), {
      error: { code: "invalid_argument", message: "a text frame must be JSON" },
    });
    mark = t.frames.length;
    t.ws.send(Buffer.from("exit 4\n"));
    assert.deepEqual(await t.control(mark), { exit: { code: 4 } });
    assert.equal(await t.closed, 1000);

    const gone = await refusedWith(
      `${s.url.replace(/^http/, "ws")}/v1/sandboxes/sbx-none-such/terminal`,
      auth,
    );
    assert.equal(gone.status, 404);
    assert.equal(gone.body.code, "not_found");
    assert.equal((await refusedWith(base, {})).status, 401);
    const bad = await refusedWith(`${base}?cols=0`, auth);
    assert.deepEqual(bad, {
      status: 400,
      body: { code: "invalid_argument", message: "'cols' must be an integer from 1 to 1000" },
    });
    const plain = await s.api(`/v1/sandboxes/${id}/terminal`);
    assert.equal(plain.status, 426);

    await s.api(`/v1/sandboxes/${id}`, { method: "DELETE" });
    leftovers.delete(id);
  });
});
