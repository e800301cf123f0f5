import { accessSync, constants as fsc } from "node:fs";
import { createServer as createHttp1Server, type IncomingMessage, type ServerResponse } from "node:http";
import type { Http2Server, Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { createRequire } from "node:module";
import type { Socket } from "node:net";
import { delimiter, join } from "node:path";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { recodeConnectParseErrors } from "@dnah/platform/connect-parse-errors";
import { Filesystem } from "@dnah/proto/filesystem/filesystem_pb";
import { Process } from "@dnah/proto/process/process_pb";
import { ACCESS_TOKEN_HEADER, isTokenExempt, tokenMatches, UNAUTHORIZED_MESSAGE } from "./auth.js";
import type { AgentConfig, AgentContext } from "./context.js";
import { toConnectError } from "./errors.js";
import { createXattrStore, type MetadataStore } from "./filesystem/metadata.js";
import { filesystemService } from "./filesystem/routes.js";
import { WatcherRegistry } from "./filesystem/watchers.js";
import { forwardToPort } from "./forward.js";
import { CpuSampler } from "./http/metrics.js";
import { sendError } from "./http/respond.js";
import { createHttpRoutes } from "./http/router.js";
import { type Logger, silentLogger } from "./log.js";
import { AGENT_PORT } from "./ports.js";
import { EXIT_RETENTION_MS, ProcessManager } from "./process/manager.js";
import { processService } from "./process/routes.js";
import { DEFAULT_PATH } from "./process/spawn.js";
import { createState } from "./state.js";
import { DEFAULT_KEEPALIVE_MS } from "./stream.js";
import { UserDb } from "./users.js";

export interface AgentOptions {
  log?: Logger;
  /** The user processes and file operations run as until `/init` says otherwise. */
  defaultUser?: string;
  sandboxId?: string;
  templateId?: string;
  /** Act as other users (uid/gid switching, chown). Default: whether the agent runs as root. */
  privileged?: boolean;
  /** PATH for processes; also where python3 and setpriv are looked up. */
  pathEnv?: string;
  /** python3 for the PTY helper. Default: found in `pathEnv`. */
  pythonPath?: string;
  /** util-linux setpriv for supplementary groups; null disables. Default: found in `pathEnv`. */
  setprivPath?: string | null;
  passwdPath?: string;
  groupPath?: string;
  keepaliveFallbackMs?: number;
  exitRetentionMs?: number;
  /** File metadata store. Default: `user.e2b.*` xattrs through a python3 helper. */
  metadata?: MetadataStore;
  /** Where forwarded ports are dialled. */
  forwardHost?: string;
}

export type HttpHandler = (
  req: IncomingMessage | Http2ServerRequest,
  res: ServerResponse | Http2ServerResponse,
) => void;

export interface Agent {
  /**
   * Serves one connection that reached guest `port`: the agent's own port gets HTTP/1.1 or h2c
   * (told apart by the HTTP/2 preface); any other port is forwarded to `127.0.0.1:<port>`.
   */
  handleConnection(socket: Socket, port: number): void;
  /** The agent's HTTP handler (Connect RPCs, then the plain routes), for callers with a server. */
  readonly httpHandler: HttpHandler;
  readonly context: AgentContext;
  /** Stops serving: closes connections and watchers, kills the processes it started. */
  close(): Promise<void>;
}

const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** Largest single Connect message accepted (stdin chunks, paths); files go through /files. */
const READ_MAX_BYTES = 64 * 1024 * 1024;
/** How long close() lets aborted streams flush their last frame before dropping connections. */
const CLOSE_GRACE_MS = 100;

export function createAgent(opts: AgentOptions = {}): Agent {
  const log = opts.log ?? silentLogger;
  const privileged = opts.privileged ?? process.getuid?.() === 0;
  const pathEnv = opts.pathEnv ?? DEFAULT_PATH;
  const config: AgentConfig = Object.freeze({
    pathEnv,
    keepaliveFallbackMs: opts.keepaliveFallbackMs ?? DEFAULT_KEEPALIVE_MS,
    initBodyMaxBytes: 1024 * 1024,
  });
  const setprivPath =
    opts.setprivPath === null ? undefined : (opts.setprivPath ?? findExecutable("setpriv", pathEnv));
  const users = new UserDb({
    privileged,
    ...(opts.passwdPath !== undefined && { passwdPath: opts.passwdPath }),
    ...(opts.groupPath !== undefined && { groupPath: opts.groupPath }),
  });
  const pythonPath = opts.pythonPath ?? findExecutable("python3", pathEnv) ?? "python3";
  const metadata = opts.metadata ?? createXattrStore(pythonPath, log);
  const processes = new ProcessManager(
    { privileged, pythonPath, setprivPath },
    log,
    opts.exitRetentionMs ?? EXIT_RETENTION_MS,
  );
  const cpu = new CpuSampler();
  cpu.prime().catch((err: unknown) => log.warn("cpu sampler", { error: String(err) }));
  const ctx: AgentContext = {
    state: createState({
      defaultUser: opts.defaultUser ?? "user",
      ...(opts.sandboxId !== undefined && { sandboxId: opts.sandboxId }),
      ...(opts.templateId !== undefined && { templateId: opts.templateId }),
    }),
    users,
    processes,
    watchers: new WatcherRegistry(users, metadata, log),
    metadata,
    cpu,
    log,
    config,
  };

  const shutdown = new AbortController();
  const routes = createHttpRoutes(ctx);
  const connectHandler = connectNodeAdapter({
    routes: (router: ConnectRouter) => {
      router.service(Process, processService(ctx));
      router.service(Filesystem, filesystemService(ctx));
    },
    fallback: (req, res) => routes(req, res),
    interceptors: [errorInterceptor(log)],
    readMaxBytes: READ_MAX_BYTES,
    shutdownSignal: shutdown.signal,
  });

  const httpHandler: HttpHandler = (req, res) => {
    const token = ctx.state.accessToken;
    if (token !== undefined) {
      const path = (req.url ?? "/").split("?")[0] ?? "/";
      const given = req.headers[ACCESS_TOKEN_HEADER];
      if (
        !isTokenExempt(req.method ?? "GET", path) &&
        !tokenMatches(token, typeof given === "string" ? given : undefined)
      ) {
        req.resume();
        sendError(res, 401, UNAUTHORIZED_MESSAGE);
        return;
      }
    }
    // Garbage protobuf is the caller's fault: 400 invalid_argument, not connect-es's 500.
    recodeConnectParseErrors(res as ServerResponse);
    connectHandler(req, res);
  };

  const h1 = createHttp1Server({ requestTimeout: 0, headersTimeout: 60_000, noDelay: true }, httpHandler);
  h1.keepAliveTimeout = 65_000;
  h1.on("clientError", (err, socket) => {
    log.debug("http client error", { error: err.message });
    if (socket.writable && !socket.writableEnded)
      socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    else socket.destroy();
  });
  // node:http2 costs milliseconds to load and most clients speak HTTP/1.1: load it on the
  // first h2c connection, not at boot.
  let h2: Http2Server | undefined;
  const http2Server = (): Http2Server => {
    if (h2 === undefined) {
      const http2 = createRequire(import.meta.url)("node:http2") as typeof import("node:http2");
      h2 = http2.createServer({ settings: { maxConcurrentStreams: 1000 } }, httpHandler);
      h2.on("sessionError", (err) => log.debug("http2 session error", { error: err.message }));
    }
    return h2;
  };

  const sockets = new Set<Socket>();
  let closed = false;

  const serveHttp = (socket: Socket): void => {
    let head: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const n = Math.min(head.length, HTTP2_PREFACE.length);
      const h2Prefix = head.subarray(0, n).equals(HTTP2_PREFACE.subarray(0, n));
      if (h2Prefix && head.length < HTTP2_PREFACE.length) return;
      socket.off("data", onData);
      socket.pause();
      socket.unshift(head);
      if (h2Prefix) {
        // The http2 session reads the unshifted bytes from the socket's buffer itself.
        http2Server().emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
    socket.resume();
  };

  return {
    context: ctx,
    httpHandler,
    handleConnection(socket, port) {
      if (closed) {
        socket.destroy();
        return;
      }
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      socket.on("error", (err) => log.debug("connection error", { port, error: err.message }));
      if (port === AGENT_PORT) serveHttp(socket);
      else forwardToPort(socket, port, opts.forwardHost ?? "127.0.0.1", log);
    },
    async close() {
      if (closed) return;
      closed = true;
      // Streams end with an error frame on shutdown; give them a moment to be flushed.
      shutdown.abort();
      if (sockets.size > 0) await new Promise((r) => setTimeout(r, CLOSE_GRACE_MS));
      ctx.watchers.closeAll();
      metadata.close();
      processes.killAll();
      for (const s of sockets) s.destroy();
      sockets.clear();
      await Promise.all([
        new Promise<void>((resolve) => h1.close(() => resolve())),
        new Promise<void>((resolve) => (h2 ? h2.close(() => resolve()) : resolve())),
      ]);
    },
  };
}

/** Maps whatever a handler throws (also mid-stream) to the Connect error the client sees. */
function errorInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const procedure = `${req.service.typeName}/${req.method.name}`;
    try {
      const res = await next(req);
      if (!res.stream) return res;
      const inner = res.message;
      const mapped = async function* () {
        try {
          yield* inner;
        } catch (err) {
          throw toConnectError(err, log, procedure);
        }
      };
      return { ...res, message: mapped() };
    } catch (err) {
      throw toConnectError(err, log, procedure);
    }
  };
}

/** First executable `name` on `pathEnv`, checked once at startup. */
export function findExecutable(name: string, pathEnv: string): string | undefined {
  for (const dir of pathEnv.split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsc.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}
