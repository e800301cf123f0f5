import { posix } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { EventType } from "@dnah/proto/filesystem/filesystem_pb";
import type { WebSocket } from "@fastify/websocket";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { FileNotFoundError, InvalidArgumentError, toErrorResponse } from "../errors.js";
import type { RpcDeps } from "../rpc/deps.js";
import { checkSandboxId } from "../rpc/validate.js";
import { MAX_PATH_BYTES } from "../sandbox/paths.js";
import {
  SHARE_MOUNT,
  type ShareEventType,
  type ShareHost,
  shareHost,
  shareRelative,
  watchShare,
} from "../sandbox/share-client.js";
import { queryParam } from "./body.js";
import { abortOnDisconnect, type RestOptions } from "./common.js";
import { errorAnswers, sandboxParams } from "./schemas.js";

type WatchRoute = { Params: { id: string }; Querystring: Record<string, unknown> };

/** One change, as both transports send it. `at` is ISO 8601. */
export interface WatchEvent {
  type: ShareEventType;
  path: string;
  at: string;
}

/** A quiet stream gets a heartbeat (SSE comment, WebSocket ping) this often. */
const HEARTBEAT_MS = 15_000;
/** A client this far behind (bytes queued to it) is cut off rather than buffered without end. */
const MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** Events waiting between the sources and the client; past it the stream ends ("too slow"). */
const MAX_PENDING_EVENTS = 10_000;
/** envd's keepalive request header: the agent sends a keepalive message this often (seconds). */
const AGENT_KEEPALIVE_S = "30";
/** Upload temporaries of the vmm (`.name.dnah-upload-…`) never show up as changes. */
const UPLOAD_TEMP_RE = /\.dnah-upload-[^/]*$/;

const EVENT_TYPES: Readonly<Partial<Record<EventType, ShareEventType>>> = {
  [EventType.CREATE]: "create",
  [EventType.WRITE]: "write",
  [EventType.REMOVE]: "remove",
  [EventType.RENAME]: "rename",
  [EventType.CHMOD]: "chmod",
};

/**
 * The folder a watch names (pure): absolute, no NUL, no `..` segment, at most 4096 bytes;
 * `.` segments and trailing slashes are dropped.
 */
export function watchPath(raw: string | undefined): string {
  if (raw === undefined || raw === "") throw new InvalidArgumentError("query parameter 'path' is required");
  if (raw.includes("\0")) throw new InvalidArgumentError("path must not contain NUL bytes");
  if (Buffer.byteLength(raw, "utf8") > MAX_PATH_BYTES)
    throw new InvalidArgumentError(`path is longer than ${MAX_PATH_BYTES} bytes`);
  if (!raw.startsWith("/")) throw new InvalidArgumentError("path must be absolute");
  if (raw.split("/").includes("..")) throw new InvalidArgumentError("path must not contain '..' segments");
  const normal = posix.normalize(raw);
  return normal.length > 1 && normal.endsWith("/") ? normal.slice(0, -1) : normal;
}

function recursiveParam(query: unknown): boolean {
  const v = queryParam(query, "recursive");
  if (v === undefined || v === "false" || v === "0") return false;
  if (v === "true" || v === "1") return true;
  throw new InvalidArgumentError("query parameter 'recursive' must be true or false");
}

/** A started watch: its events until a source ends (`reason`), or the signal aborts. */
interface Watch {
  path: string;
  events: AsyncIterable<WatchEvent>;
  /** Why the stream ended, once it has. */
  reason(): string;
}

/**
 * Starts the sources of a watch and resolves once all of them watch. Changes below the share
 * come from the host (the vmm watches the share folder: it sees the guest's writes and the
 * host's uploads alike, also while the sandbox is paused; the guest's inotify does not see
 * host writes through virtio-fs), everything else from the guest agent's WatchDir. A watch of
 * a folder that contains the share uses both, the agent's events below the share dropped.
 */
export async function openWatch(
  deps: RpcDeps,
  sandboxId: string,
  query: unknown,
  signal: AbortSignal,
): Promise<Watch> {
  checkSandboxId(sandboxId);
  const path = watchPath(queryParam(query, "path"));
  const recursive = recursiveParam(query);
  const host = await shareHost(deps, sandboxId);
  const rel = shareRelative(path);
  const coversShare =
    rel !== undefined || (recursive && (path === "/" || SHARE_MOUNT.startsWith(`${path}/`)));

  const pending: WatchEvent[] = [];
  let wake: (() => void) | undefined;
  let endReason: string | undefined;
  const finish = (reason: string) => {
    endReason ??= reason;
    wake?.();
  };
  const push = (ev: WatchEvent) => {
    if (endReason !== undefined) return;
    if (pending.length >= MAX_PENDING_EVENTS) return finish("client too slow");
    pending.push(ev);
    wake?.();
  };
  const inner = new AbortController();
  const abort = () => inner.abort(signal.reason);
  signal.addEventListener("abort", abort, { once: true });

  inner.signal.addEventListener("abort", () => wake?.(), { once: true });
  const starts: Promise<void>[] = [];
  if (coversShare)
    starts.push(startShare(host, rel ?? "", rel === undefined || recursive, inner.signal, push, finish));
  if (rel === undefined)
    starts.push(startAgent(deps, host, path, recursive, coversShare, inner.signal, push, finish));
  try {
    await Promise.all(starts);
  } catch (err) {
    inner.abort(err);
    signal.removeEventListener("abort", abort);
    throw err;
  }

  async function* events(): AsyncGenerator<WatchEvent> {
    try {
      while (true) {
        while (pending.length > 0) yield pending.shift()!;
        if (endReason !== undefined || inner.signal.aborted) return;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    } finally {
      // Ends both sources: the agent's WatchDir handler closes its watcher, the vmm unsubscribes.
      inner.abort(new Error("watch ended"));
      signal.removeEventListener("abort", abort);
    }
  }
  return { path, events: events(), reason: () => endReason ?? "client went away" };
}

async function startShare(
  host: ShareHost,
  rel: string,
  recursive: boolean,
  signal: AbortSignal,
  push: (ev: WatchEvent) => void,
  finish: (reason: string) => void,
): Promise<void> {
  const events = await watchShare(host, rel, recursive, signal);
  void (async () => {
    for await (const ev of events)
      push({ type: ev.type, path: `${SHARE_MOUNT}${ev.path}`, at: new Date(ev.at).toISOString() });
    finish("sandbox deleted");
  })().catch(() => finish(signal.aborted ? "client went away" : "the sandbox's host ended the watch"));
}

async function startAgent(
  deps: RpcDeps,
  host: ShareHost,
  path: string,
  recursive: boolean,
  skipShare: boolean,
  signal: AbortSignal,
  push: (ev: WatchEvent) => void,
  finish: (reason: string) => void,
): Promise<void> {
  const id = host.sandboxId;
  const conn = await deps.agents.connect(id);
  const stream = conn.filesystem
    .watchDir(
      { path, recursive, includeEntry: false, allowNetworkMounts: true },
      { signal, headers: { "keepalive-ping-interval": AGENT_KEEPALIVE_S } },
    )
    [Symbol.asyncIterator]();
  try {
    const first = await stream.next();
    if (first.done || first.value.event.case !== "start") throw new Error("the agent's watch did not start");
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.NotFound)
      throw new FileNotFoundError(path, { cause: err });
    if (err instanceof ConnectError && err.code === Code.InvalidArgument)
      throw new InvalidArgumentError(err.rawMessage, { cause: err });
    throw deps.agents.translate(id, err);
  }
  void (async () => {
    while (true) {
      const r = await stream.next();
      if (r.done) break;
      if (r.value.event.case !== "filesystem") continue;
      const ev = r.value.event.value;
      const type = EVENT_TYPES[ev.type];
      const full = posix.join(path, ev.name);
      if (type === undefined || UPLOAD_TEMP_RE.test(full)) continue;
      if (skipShare && (full === SHARE_MOUNT || full.startsWith(`${SHARE_MOUNT}/`))) continue;
      push({ type, path: full, at: new Date().toISOString() });
    }
    finish("the sandbox's agent ended the watch");
  })().catch(() => finish(signal.aborted ? "client went away" : "sandbox stopped or deleted"));
}

/**
 * `GET /v1/sandboxes/:id/files/watch?path=/abs/dir&recursive=true`: changes below a folder,
 * as server-sent events (`event: start`, then one `data: {type, path, at}` per change,
 * `: heartbeat` comments, `event: end` with the reason) or, on the same route, as a WebSocket
 * (a `{type: "start"}` message, then one JSON message per change, pings; closed with 1000
 * and the reason, or with 1008/1011 and `{type: "error", code, message}` when refused).
 * Counts as activity once, when the watch starts.
 */
export async function watchRoutes(app: FastifyInstance, opts: RestOptions): Promise<void> {
  const { deps } = opts;

  const sse = async (req: FastifyRequest<WatchRoute>, reply: FastifyReply) => {
    const signal = abortOnDisconnect(reply);
    const watch = await openWatch(deps, req.params.id, req.query, signal);
    deps.activity.touch(req.params.id);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      "content-type": "text/event-stream",
      "cache-control": "no-store",
      "x-accel-buffering": "no",
    });
    res.write(`event: start\ndata: ${JSON.stringify({ path: watch.path })}\n\n`);
    const timer = setInterval(() => res.write(": heartbeat\n\n"), HEARTBEAT_MS);
    timer.unref();
    let reason: string | undefined;
    try {
      for await (const ev of watch.events) {
        if (res.writableLength > MAX_QUEUED_BYTES) {
          reason = "client too slow";
          break;
        }
        res.write(`data: ${JSON.stringify(ev)}\n\n`);
      }
    } finally {
      clearInterval(timer);
      if (!res.destroyed)
        res.end(`event: end\ndata: ${JSON.stringify({ reason: reason ?? watch.reason() })}\n\n`);
    }
  };

  const ws = (socket: WebSocket, req: FastifyRequest<WatchRoute>) => {
    const ac = new AbortController();
    socket.on("close", () => ac.abort(new Error("client disconnected")));
    void (async () => {
      let watch: Watch;
      try {
        watch = await openWatch(deps, req.params.id, req.query, ac.signal);
      } catch (err) {
        const e = toErrorResponse(err, { logger: deps.logger, requestId: req.requestId });
        socket.send(JSON.stringify({ type: "error", code: e.code, message: e.message }));
        socket.close(e.httpStatus >= 500 ? 1011 : 1008, e.code);
        return;
      }
      deps.activity.touch(req.params.id);
      socket.send(JSON.stringify({ type: "start", path: watch.path, at: new Date().toISOString() }));
      const timer = setInterval(() => socket.ping(), HEARTBEAT_MS);
      timer.unref();
      let reason: string | undefined;
      try {
        for await (const ev of watch.events) {
          if (socket.bufferedAmount > MAX_QUEUED_BYTES) {
            reason = "client too slow";
            break;
          }
          socket.send(JSON.stringify(ev));
        }
      } finally {
        clearInterval(timer);
        if (socket.readyState === socket.OPEN) socket.close(1000, (reason ?? watch.reason()).slice(0, 120));
      }
    })().catch((err: unknown) => {
      deps.logger.warn({ err, "sandbox.id": req.params.id }, "watch over WebSocket failed");
      socket.terminate();
    });
  };

  app.route<WatchRoute>({
    method: "GET",
    url: "/sandboxes/:id/files/watch",
    schema: {
      tags: ["files"],
      operationId: "watchFiles",
      summary: "Watch a folder for changes (Server-Sent Events, or a WebSocket upgrade)",
      params: sandboxParams,
      querystring: {
        type: "object",
        required: ["path"],
        properties: {
          path: { type: "string", description: "An absolute folder." },
          recursive: { type: "string", enum: ["true", "false", "1", "0"] },
        },
      },
      response: {
        200: {
          description:
            'text/event-stream: one `data: {"type","path","at"}` event a change (type: create, write, remove, rename, chmod).',
          content: { "text/event-stream": { schema: { type: "string" } } },
        },
        ...errorAnswers(400, 404, 409),
      },
    },
    handler: sse,
    wsHandler: ws,
  });
}
