import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Daytona, DaytonaNotFoundError, type Sandbox } from "@daytonaio/sdk";
import { createApiKey } from "@dnah/gateway";
import { io, type Socket } from "socket.io-client";
import { eventually, startTestStack, type TestStack } from "./harness.js";

interface StateEvent {
  sandbox: { id: string; state: string; toolboxProxyUrl: string };
  oldState: string;
  newState: string;
}

/** A script that exits well within this after its last line had socket.io working. */
const EXIT_BOUND_MS = 20_000;

describe("Daytona socket.io events", () => {
  let s: TestStack;
  let daytona: Daytona;
  const sockets: Socket[] = [];
  const created: Sandbox[] = [];

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    daytona = new Daytona({ apiKey: s.key, apiUrl: `${s.url}/api` });
  });
  after(async () => {
    for (const sock of sockets) sock.disconnect();
    for (const sb of created) await sb.delete().catch(() => undefined);
    await daytona?.[Symbol.asyncDispose]();
    await s?.close();
  });

  /** Connects the way the SDK does (§11): websocket only, the key in the CONNECT auth payload. */
  function connect(token: string): Socket {
    const sock = io(s.url, {
      path: "/api/socket.io/",
      transports: ["websocket"],
      auth: { token },
      query: { source: "test", sdkVersion: "0.218.0" },
      reconnection: false,
    });
    sockets.push(sock);
    return sock;
  }

  function connected(sock: Socket): Promise<void> {
    return new Promise((resolve, reject) => {
      // It may have connected already (while the test awaited something else).
      if (sock.connected) return resolve();
      sock.once("connect", () => resolve());
      sock.once("connect_error", reject);
    });
  }

  test("a bad token is refused; state transitions reach the owner's room only", async () => {
    const bad = connect("dnah_not_a_key_000000000000");
    const err = await new Promise<Error>((resolve) => bad.once("connect_error", resolve));
    assert.match(err.message, /invalid API key/);

    const mine = connect(s.key);
    const other = await createApiKey(s.db, "other");
    const theirs = connect(other.key);
    await Promise.all([connected(mine), connected(theirs)]);
    const seen: StateEvent[] = [];
    const leaked: unknown[] = [];
    mine.on("sandbox.state.updated", (e: StateEvent) => seen.push(e));
    theirs.on("sandbox.state.updated", (e: unknown) => leaked.push(e));

    const sb = await daytona.create({ labels: { t: "events" } }, { timeout: 120 });
    created.push(sb);
    await sb.stop();
    await sb.start();
    const mineOnly = (e: StateEvent) => e.sandbox.id === sb.id;
    await eventually(async () =>
      seen.filter(mineOnly).some((e) => e.newState === "started" && e.oldState === "starting"),
    );
    const transitions = seen.filter(mineOnly).map((e) => `${e.oldState}>${e.newState}`);
    assert.deepEqual(transitions, [
      "started>stopping",
      "stopping>stopped",
      "stopped>starting",
      "starting>started",
    ]);
    for (const e of seen.filter(mineOnly)) assert.equal(e.sandbox.state, e.newState);
    assert.equal(seen[0]?.sandbox.toolboxProxyUrl, `${s.url}/toolbox`);

    // Another key neither sees the events nor the sandbox.
    const otherClient = new Daytona({ apiKey: other.key, apiUrl: `${s.url}/api` });
    try {
      await assert.rejects(otherClient.get(sb.id), (e: unknown) => e instanceof DaytonaNotFoundError);
    } finally {
      await otherClient[Symbol.asyncDispose]();
    }
    await sb.delete(60, true);
    await eventually(async () => seen.some((e) => e.sandbox.id === sb.id && e.newState === "destroyed"));
    assert.deepEqual(leaked, []);
  });

  test("WebSocket routes still work beside socket.io (one upgrade dispatcher): a PTY", async () => {
    const sb = await daytona.create({ labels: { t: "pty" } }, { timeout: 120 });
    created.push(sb);
    let out = "";
    const pty = await sb.process.createPty({
      id: `pty-${randomBytes(3).toString("hex")}`,
      onData: (d: Uint8Array) => {
        out += Buffer.from(d).toString("utf8");
      },
    });
    try {
      await pty.waitForConnection();
      await pty.sendInput("echo pty-$((40+2))\n");
      await eventually(async () => out.includes("pty-42"), 30_000);
    } finally {
      await pty.kill().catch(() => undefined);
      await pty.disconnect().catch(() => undefined);
    }
  });

  test("a script with a live event stream that never disposes its client exits promptly", async () => {
    const script = `
      import { Daytona } from "@daytonaio/sdk";
      const d = new Daytona({ apiKey: process.env.T_KEY, apiUrl: process.env.T_URL });
      const sb = await d.create({ labels: { t: "child" } }, { timeout: 120 });
      await sb.delete(60, true);
      // The SDK's own view of its event stream (a private field of the pinned 0.218.0).
      console.log("EVENTS-CONNECTED=" + String(d.eventDispatcher?.isConnected));
      console.log("LAST-LINE");
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      cwd: process.cwd(),
      env: { ...process.env, T_KEY: s.key, T_URL: `${s.url}/api` },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    let stdout = "";
    child.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
    });
    try {
      const lastLineAt = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no LAST-LINE in time; stderr: ${stderr}`)), 180_000);
        child.stdout.on("data", (b: Buffer) => {
          stdout += b.toString();
          if (stdout.includes("LAST-LINE")) {
            clearTimeout(timer);
            resolve(Date.now());
          }
        });
        child.once("exit", (code) => {
          clearTimeout(timer);
          reject(new Error(`child exited (${code}) before its last line; stderr: ${stderr}`));
        });
      });
      const code = await new Promise<number | null>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`still alive ${EXIT_BOUND_MS} ms after its last line`)),
          EXIT_BOUND_MS,
        );
        child.once("exit", (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
      assert.equal(code, 0, stderr);
      // It had a live socket.io connection: exiting promptly is not just "events were off".
      assert.match(stdout, /EVENTS-CONNECTED=true/);
      assert.ok(Date.now() - lastLineAt < EXIT_BOUND_MS);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });
});
