import { type Agent, type IncomingMessage, request } from "node:http";
import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  clientTracing,
  createTunnelAgent,
  injectTraceHeaders,
  type Logger,
  TunnelError,
} from "@dnah/platform";
import { SandboxState, type SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { Filesystem } from "@dnah/proto/filesystem/filesystem_pb";
import { Process } from "@dnah/proto/process/process_pb";
import {
  DeadlineExceededError,
  FailedPreconditionError,
  FileNotFoundError,
  findCause,
  InvalidArgumentError,
  SandboxNotFoundError,
  UnavailableError,
} from "../errors.js";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "./scheduler.js";

/** envd's header for a sandbox's access token. */
const ACCESS_TOKEN_HEADER = "x-access-token";
/** The guest agent's port (E2B envd's). */
export const AGENT_PORT = 49983;
/** A /files transfer that goes silent this long is abandoned. */
const FILE_IDLE_TIMEOUT_MS = 60_000;
/** Error bodies from the agent are read up to this size. */
const ERROR_BODY_MAX_BYTES = 64 * 1024;

/** Clients for one sandbox's agent, all over tunnels through its vmm. */
export interface AgentConnection {
  readonly sandboxId: string;
  readonly process: Client<typeof Process>;
  readonly filesystem: Client<typeof Filesystem>;
  /** GET /files: the raw bytes of a file, as a stream (status 200 only; others are thrown). */
  getFile(path: string, signal?: AbortSignal): Promise<IncomingMessage>;
  /** POST /files (application/octet-stream): writes a file, creating parents. */
  postFile(path: string, body: Uint8Array, signal?: AbortSignal): Promise<{ path: string }[]>;
}

interface Entry {
  vmmUrl: string;
  agent: Agent;
  /** Tunnels to the sandbox's other ports (user servers, the code interpreter), by port. */
  ports: Map<number, Agent>;
  conn: AgentConnection;
  resolvedAt: number;
  usedAt: number;
}

export interface AgentPoolOptions {
  scheduler: Client<typeof SchedulerService>;
  logger: Logger;
  /** The `authorization` header for one call to the vmm at a URL (a fresh signed token). */
  vmmAuthorization?: (vmmUrl: string) => string;
  /** How long a sandbox → vmm lookup is trusted. */
  cacheTtlMs?: number;
  /** Connections unused this long are closed. */
  idleCloseMs?: number;
  now?: () => number;
  /**
   * The sandbox's envd access token, sent as `X-Access-Token` on every call. An agent that
   * was never given a token ignores it; one that was (E2B sandboxes) requires it.
   */
  accessToken?: (sandboxId: string) => string;
}

/**
 * Per-sandbox cache: scheduler.GetSandbox → vmm URL → a tunnel http.Agent to the agent's
 * port → Connect clients and /files requests over it. Lookups are reused for `cacheTtlMs`
 * and concurrent lookups of one sandbox share one scheduler call. Entries are dropped on
 * delete, on a tunnel 404 (the vmm no longer knows the sandbox) and when idle.
 */
export class AgentPool {
  private readonly entries = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<Entry>>();
  private readonly cacheTtlMs: number;
  private readonly idleCloseMs: number;
  private readonly now: () => number;
  private readonly sweeper: NodeJS.Timeout;
  private readonly holds = new Set<() => void>();
  private drained: (() => void) | undefined;

  constructor(private readonly opts: AgentPoolOptions) {
    this.cacheTtlMs = opts.cacheTtlMs ?? 5_000;
    this.idleCloseMs = opts.idleCloseMs ?? 5 * 60_000;
    this.now = opts.now ?? Date.now;
    this.sweeper = setInterval(() => this.sweep(), 60_000);
    this.sweeper.unref();
  }

  /** The connection to a running sandbox's agent; throws typed errors otherwise. */
  async connect(sandboxId: string): Promise<AgentConnection> {
    return (await this.entry(sandboxId)).conn;
  }

  /**
   * An http.Agent whose sockets are tunnels to `port` in a running sandbox (raw proxying);
   * throws the same typed errors as connect().
   */
  async tunnel(sandboxId: string, port: number): Promise<Agent> {
    const e = await this.entry(sandboxId);
    if (port === AGENT_PORT) return e.agent;
    let agent = e.ports.get(port);
    if (agent === undefined) {
      agent = createTunnelAgent(e.vmmUrl, sandboxId, port, this.dialOptions(e.vmmUrl));
      e.ports.set(port, agent);
    }
    return agent;
  }

  private dialOptions(vmmUrl: string) {
    const auth = this.opts.vmmAuthorization;
    return auth === undefined ? {} : { authorization: () => auth(vmmUrl) };
  }

  private async entry(sandboxId: string): Promise<Entry> {
    const now = this.now();
    const hit = this.entries.get(sandboxId);
    if (hit !== undefined && now - hit.resolvedAt < this.cacheTtlMs) {
      hit.usedAt = now;
      return hit;
    }
    let p = this.pending.get(sandboxId);
    if (p === undefined) {
      p = this.resolve(sandboxId).finally(() => this.pending.delete(sandboxId));
      this.pending.set(sandboxId, p);
    }
    return p;
  }

  /** Forgets a sandbox and closes its tunnels (after a delete, or when its vmm lost it). */
  forget(sandboxId: string): void {
    const e = this.entries.get(sandboxId);
    if (e === undefined) return;
    this.entries.delete(sandboxId);
    e.agent.destroy();
    for (const a of e.ports.values()) a.destroy();
  }

  /**
   * Translates transport failures of a call to the agent: a tunnel 404 means the sandbox is
   * gone (and is forgotten), a 409 that it is paused; other tunnel and connection failures
   * are `unavailable`.
   * Anything else (the agent's own Connect errors) is returned unchanged for the caller.
   */
  translate(sandboxId: string, err: unknown): unknown {
    const tunnel = findCause(err, (e): e is TunnelError => e instanceof TunnelError);
    if (tunnel !== undefined) {
      if (tunnel.status === 404) {
        this.forget(sandboxId);
        return new SandboxNotFoundError(sandboxId, { cause: err });
      }
      if (tunnel.status === 504)
        return new DeadlineExceededError("sandbox agent did not answer in time", { cause: err });
      if (tunnel.status === 409) {
        // Paused: its kept-alive tunnels are useless until it resumes.
        this.forget(sandboxId);
        return new FailedPreconditionError(`sandbox '${sandboxId}' is paused; resume it first`, {
          cause: err,
        });
      }
      return new UnavailableError("sandbox agent unreachable", { cause: err });
    }
    if (err instanceof ConnectError && err.code === Code.Unavailable) {
      return new UnavailableError("sandbox agent unreachable", { cause: err });
    }
    return err;
  }

  /**
   * Marks work that must finish before the pool closes (a running command, until it has
   * been killed). Returns the release function.
   */
  hold(): () => void {
    const release = () => {
      if (this.holds.delete(release) && this.holds.size === 0) this.drained?.();
    };
    this.holds.add(release);
    return release;
  }

  /** Waits until nothing is held, or for `timeoutMs` at most. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.holds.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.drained = resolve;
      timer = setTimeout(resolve, timeoutMs);
    });
    clearTimeout(timer);
    this.drained = undefined;
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const id of [...this.entries.keys()]) this.forget(id);
  }

  private async resolve(sandboxId: string): Promise<Entry> {
    let record: Awaited<ReturnType<Client<typeof SchedulerService>["getSandbox"]>>["sandbox"];
    try {
      record = (await this.opts.scheduler.getSandbox({ sandboxId }, { timeoutMs: SCHEDULER_TIMEOUT_MS }))
        .sandbox;
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.NotFound) this.forget(sandboxId);
      throw fromScheduler(err, (cause) => new SandboxNotFoundError(sandboxId, { cause }));
    }
    if (record === undefined || record.state === SandboxState.DELETED) {
      this.forget(sandboxId);
      throw new SandboxNotFoundError(sandboxId);
    }
    if (record.state === SandboxState.PAUSED)
      throw new FailedPreconditionError(`sandbox '${sandboxId}' is paused; resume it first`);
    if (record.state !== SandboxState.RUNNING) {
      const state = SandboxState[record.state]?.toLowerCase() ?? "not running";
      throw new FailedPreconditionError(`sandbox '${sandboxId}' is ${state}, not running`);
    }
    if (record.vmmUrl === "") throw new UnavailableError("sandbox has no host yet; retry");
    const now = this.now();
    const old = this.entries.get(sandboxId);
    if (old !== undefined && old.vmmUrl === record.vmmUrl) {
      old.resolvedAt = now;
      old.usedAt = now;
      return old;
    }
    if (old !== undefined) this.forget(sandboxId);
    const agent = createTunnelAgent(record.vmmUrl, sandboxId, AGENT_PORT, this.dialOptions(record.vmmUrl));
    const entry: Entry = {
      vmmUrl: record.vmmUrl,
      agent,
      ports: new Map(),
      conn: makeConnection(sandboxId, agent, this.opts.accessToken?.(sandboxId)),
      resolvedAt: now,
      usedAt: now,
    };
    this.entries.set(sandboxId, entry);
    this.opts.logger.debug({ "sandbox.id": sandboxId, vmmUrl: record.vmmUrl }, "agent connection opened");
    return entry;
  }

  private sweep(): void {
    const cutoff = this.now() - this.idleCloseMs;
    for (const [id, e] of this.entries) if (e.usedAt < cutoff) this.forget(id);
  }
}

function makeConnection(sandboxId: string, agent: Agent, token: string | undefined): AgentConnection {
  const withToken: Interceptor = (next) => (req) => {
    if (token !== undefined) req.header.set(ACCESS_TOKEN_HEADER, token);
    return next(req);
  };
  const transport = createConnectTransport({
    // The host name is never resolved: the agent's sockets are tunnels.
    baseUrl: "http://agent",
    httpVersion: "1.1",
    useBinaryFormat: true,
    nodeOptions: { agent },
    interceptors: [clientTracing, withToken],
  });
  return {
    sandboxId,
    process: createClient(Process, transport),
    filesystem: createClient(Filesystem, transport),
    async getFile(path, signal) {
      const res = await httpCall(agent, token, "GET", path, undefined, signal);
      if (res.statusCode === 200) return res;
      throw await fileError(res, path);
    },
    async postFile(path, body, signal) {
      const res = await httpCall(agent, token, "POST", path, body, signal);
      const text = (await readBody(res, ERROR_BODY_MAX_BYTES)).toString("utf8");
      if (res.statusCode !== 200) throw fileErrorFrom(res.statusCode ?? 0, text, path);
      const parsed: unknown = JSON.parse(text);
      if (!Array.isArray(parsed)) throw new Error("agent answered POST /files with a non-array");
      return parsed.filter((e): e is { path: string } => typeof e?.path === "string");
    },
  };
}

function httpCall(
  agent: Agent,
  token: string | undefined,
  method: "GET" | "POST",
  path: string,
  body: Uint8Array | undefined,
  signal: AbortSignal | undefined,
): Promise<IncomingMessage> {
  const headers = injectTraceHeaders({});
  if (token !== undefined) headers[ACCESS_TOKEN_HEADER] = token;
  if (body !== undefined) {
    headers["content-type"] = "application/octet-stream";
    headers["content-length"] = String(body.byteLength);
  }
  return new Promise((resolve, reject) => {
    const req = request({
      agent,
      host: "agent",
      method,
      path: `/files?${new URLSearchParams({ path }).toString()}`,
      headers,
      timeout: FILE_IDLE_TIMEOUT_MS,
      ...(signal !== undefined ? { signal } : {}),
    });
    req.on("response", resolve);
    req.on("timeout", () => req.destroy(new DeadlineExceededError("sandbox agent stopped answering")));
    req.on("error", reject);
    req.end(body);
  });
}

async function fileError(res: IncomingMessage, path: string): Promise<Error> {
  const text = (await readBody(res, ERROR_BODY_MAX_BYTES)).toString("utf8");
  return fileErrorFrom(res.statusCode ?? 0, text, path);
}

/** The agent's /files errors (JSON `{code, message}`, envd-style) as gateway errors. */
function fileErrorFrom(status: number, text: string, path: string): Error {
  let message = "";
  try {
    const m = (JSON.parse(text) as { message?: unknown }).message;
    if (typeof m === "string") message = m;
  } catch {
    message = text.slice(0, 200);
  }
  switch (status) {
    case 404:
      return new FileNotFoundError(path);
    case 400:
      return new InvalidArgumentError(message || `cannot use path '${path}'`);
    case 507:
      return new FailedPreconditionError("not enough disk space in the sandbox");
    default:
      return new Error(`agent answered /files with HTTP ${status}: ${message}`);
  }
}

/** Reads a body up to `max` bytes and discards the rest (error bodies, small JSON answers). */
export async function readBody(res: IncomingMessage, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    if (n < max) {
      chunks.push(c.subarray(0, max - n));
      n += Math.min(c.length, max - n);
    }
  }
  return Buffer.concat(chunks);
}
