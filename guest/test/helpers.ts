import { mkdtemp, rm } from "node:fs/promises";
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { connect, type Socket } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { type Client, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Filesystem } from "@dnah/proto/filesystem/filesystem_pb";
import { Process } from "@dnah/proto/process/process_pb";
import { type Agent, type AgentOptions, createAgent } from "../src/agent.js";
import { silentLogger } from "../src/log.js";
import { AGENT_PORT } from "../src/ports.js";
import { type HybridVsockListener, listenHybridVsock } from "../src/vsock.js";

/**
 * The host side of the hybrid-vsock handshake: a socket connected to guest `port`. Reads with
 * 'readable' so that the socket is left neither flowing nor explicitly paused for its next user.
 */
export function dialGuest(socketPath: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let line = "";
    const onReadable = (): void => {
      for (;;) {
        const byte = socket.read(1) as Buffer | null;
        if (byte === null) return;
        if (byte[0] !== 0x0a) {
          line += byte.toString("latin1");
          if (line.length > 64) fail(new Error("handshake reply too long"));
          continue;
        }
        socket.off("readable", onReadable);
        socket.off("close", onClose);
        socket.off("error", fail);
        if (!line.startsWith("OK ")) fail(new Error(`handshake refused: ${line}`));
        else resolve(socket);
        return;
      }
    };
    const fail = (err: Error): void => {
      socket.destroy();
      reject(err);
    };
    const onClose = (): void => reject(new Error("closed during handshake"));
    socket.on("readable", onReadable);
    socket.once("close", onClose);
    socket.once("error", fail);
    socket.once("connect", () => socket.write(`CONNECT ${port}\n`));
  });
}

/** An http.Agent whose connections are handshaken guest connections. */
export function guestHttpAgent(socketPath: string, port = AGENT_PORT): HttpAgent {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 64 });
  (agent as unknown as { createConnection: unknown }).createConnection = (
    _opts: unknown,
    cb: (err: Error | null, socket?: Socket) => void,
  ) => {
    dialGuest(socketPath, port).then(
      (s) => cb(null, s),
      (err: Error) => cb(err),
    );
    return undefined;
  };
  return agent;
}

export interface HttpResult {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface TestGuest {
  agent: Agent;
  dir: string;
  socketPath: string;
  /** Name of a user that exists (root here, or whoever runs the tests). */
  user: string;
  httpAgent: HttpAgent;
  transport(binary: boolean, headers?: Record<string, string>): Transport;
  process(binary?: boolean, headers?: Record<string, string>): Client<typeof Process>;
  fs(binary?: boolean, headers?: Record<string, string>): Client<typeof Filesystem>;
  http(
    method: string,
    path: string,
    opts?: { headers?: Record<string, string>; body?: Buffer | string },
  ): Promise<HttpResult>;
  close(): Promise<void>;
}

/** Starts an agent in-process behind a hybrid-vsock Unix socket in a fresh temp dir, /init-ed. */
export async function startGuest(
  opts: AgentOptions = {},
  init: Record<string, unknown> = {},
): Promise<TestGuest> {
  const dir = await mkdtemp(join(tmpdir(), "dnah-guest-"));
  const socketPath = join(dir, "agent.sock");
  const user = userInfo().username;
  const agent = createAgent({ log: silentLogger, ...opts });
  const listener: HybridVsockListener = await listenHybridVsock({
    path: socketPath,
    log: silentLogger,
    onConnection: agent.handleConnection,
  });
  const httpAgent = guestHttpAgent(socketPath);
  const http: TestGuest["http"] = (method, path, o = {}) =>
    new Promise((resolve, reject) => {
      const req = httpRequest(
        { host: "guest", path, method, agent: httpAgent, headers: o.headers ?? {} },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
          );
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(o.body);
    });
  const transport = (binary: boolean, headers: Record<string, string> = {}): Transport =>
    createConnectTransport({
      baseUrl: "http://guest",
      httpVersion: "1.1",
      useBinaryFormat: binary,
      nodeOptions: { agent: httpAgent },
      interceptors: [
        (next) => (req) => {
          for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
          return next(req);
        },
      ],
    });
  const guest: TestGuest = {
    agent,
    dir,
    socketPath,
    user,
    httpAgent,
    transport,
    process: (binary = false, headers = {}) => createClient(Process, transport(binary, headers)),
    fs: (binary = false, headers = {}) => createClient(Filesystem, transport(binary, headers)),
    http,
    async close() {
      httpAgent.destroy();
      const stopped = listener.close();
      await agent.close();
      await stopped;
      await rm(dir, { recursive: true, force: true });
    },
  };
  const res = await http("POST", "/init", {
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ defaultUser: user, ...init }),
  });
  if (res.status !== 204) throw new Error(`/init failed: ${res.status} ${res.body.toString()}`);
  return guest;
}

export const pidOf = (pid: number) => ({ selector: { case: "pid" as const, value: pid } });

export const text = (b: Uint8Array | undefined): string => (b ? Buffer.from(b).toString("utf8") : "");

export interface Collected {
  pid: number;
  events: string[];
  stdout: string;
  stderr: string;
  pty: string;
  end: { exitCode: number; exited: boolean; status: string; error?: string | undefined } | undefined;
}

interface EventLike {
  event?:
    | {
        event:
          | { case: "start"; value: { pid: number } }
          | { case: "data"; value: { output: { case: string | undefined; value?: unknown } } }
          | {
              case: "end";
              value: { exitCode: number; exited: boolean; status: string; error?: string | undefined };
            }
          | { case: "keepalive"; value: unknown }
          | { case: undefined; value?: undefined };
      }
    | undefined;
}

/** Drains a Start/Connect stream; `onStart` runs when the pid is known. */
export async function collect(
  stream: AsyncIterable<EventLike>,
  onStart?: (pid: number) => void | Promise<void>,
): Promise<Collected> {
  const out: Collected = { pid: 0, events: [], stdout: "", stderr: "", pty: "", end: undefined };
  for await (const msg of stream) {
    const ev = msg.event?.event;
    if (!ev?.case) continue;
    out.events.push(ev.case);
    if (ev.case === "start") {
      out.pid = ev.value.pid;
      await onStart?.(ev.value.pid);
    } else if (ev.case === "data") {
      const o = ev.value.output;
      const t = text(o.value as Uint8Array);
      if (o.case === "stdout") out.stdout += t;
      else if (o.case === "stderr") out.stderr += t;
      else if (o.case === "pty") out.pty += t;
    } else if (ev.case === "end") {
      out.end = {
        exitCode: ev.value.exitCode,
        exited: ev.value.exited,
        status: ev.value.status,
        error: ev.value.error,
      };
    }
  }
  return out;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until it returns a value or the deadline passes. */
export async function eventually<T>(
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 5000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(25);
  }
}
