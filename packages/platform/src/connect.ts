import type { DescService } from "@bufbuild/protobuf";
import {
  type Client,
  type ConnectRouter,
  type ContextValues,
  createClient,
  type Interceptor,
} from "@connectrpc/connect";
import { fastifyConnectPlugin } from "@connectrpc/connect-fastify";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type FastifyInstance, type FastifyReply, type FastifyRequest, fastify } from "fastify";
import type { Logger } from "./logger.js";
import { clientTracing, serverTracing } from "./telemetry.js";

/** A Connect client for a dnah service at `baseUrl`, with trace propagation. */
export function createServiceClient<T extends DescService>(
  service: T,
  baseUrl: string,
  interceptors: Interceptor[] = [],
): Client<T> {
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    useBinaryFormat: true,
    interceptors: [clientTracing, ...interceptors],
  });
  return createClient(service, transport);
}

export interface ServiceServerOptions {
  routes: (router: ConnectRouter) => void;
  logger: Logger;
  /** Extra interceptors run after tracing (e.g. auth). */
  interceptors?: Interceptor[];
  /** Largest request body accepted, in bytes. */
  bodyLimitBytes?: number;
  /** Values handlers read from `ctx.values`, taken from the request after its hooks (auth) ran. */
  contextValues?: (req: FastifyRequest) => ContextValues;
  /**
   * Aborting it ends the Connect calls still running; its reason, when a ConnectError, is
   * what their callers receive (close() uses it when its drain bound is reached).
   */
  shutdownSignal?: AbortSignal;
  /** A request's headers must all arrive within this long, else 408 and the connection closes. */
  headersTimeoutMs?: number;
  /**
   * A request body that moves no byte for this long is cut (its connection destroyed): not a
   * bound on the whole upload, which may take minutes. 0 or undefined: no bound.
   */
  bodyIdleTimeoutMs?: number;
}

/** Node's default is 60 s, checked every 30 s: a slow header could hold a socket for 90 s. */
export const DEFAULT_HEADERS_TIMEOUT_MS = 10_000;

/** A Fastify server with the service's Connect routes mounted; `listen` is the caller's. */
export async function createServiceServer(opts: ServiceServerOptions): Promise<FastifyInstance> {
  const bodyLimit = opts.bodyLimitBytes ?? 64 * 1024 * 1024;
  const headersTimeout = opts.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS;
  const app = fastify({
    bodyLimit,
    logger: false,
    // Node checks header deadlines on a timer: every quarter of the bound cuts a slow header
    // within 1.25 × the bound. No total request time (requestTimeout 0): uploads may be long.
    http: {
      headersTimeout,
      connectionsCheckingInterval: Math.min(5_000, Math.max(100, Math.floor(headersTimeout / 4))),
    },
    // A request that reaches a draining server on a kept-alive connection is served (with
    // `Connection: close`), not refused with Fastify's own 503 body: its client could not know.
    return503OnClosing: false,
    // Requests Fastify rejects before routing (a malformed URL) get the JSON error shape
    // every dnah service answers with, not Fastify's own.
    frameworkErrors: (err, _req, reply) => {
      const r = reply as unknown as FastifyReply;
      r.code(400)
        .type("application/json")
        .send({ code: "invalid_argument", message: err.message || "malformed request" });
    },
  });
  await app.register(fastifyConnectPlugin, {
    // Connect reads its own bodies; bound them like every other request body.
    readMaxBytes: bodyLimit,
    routes: opts.routes,
    interceptors: [serverTracing, ...(opts.interceptors ?? [])],
    ...(opts.shutdownSignal !== undefined ? { shutdownSignal: opts.shutdownSignal } : {}),
    ...(opts.contextValues !== undefined ? { contextValues: opts.contextValues } : {}),
  });
  if (opts.bodyIdleTimeoutMs !== undefined && opts.bodyIdleTimeoutMs > 0)
    boundBodyIdle(app, opts.bodyIdleTimeoutMs, opts.logger);
  return app;
}

/**
 * Cuts a request whose body stops arriving for `idleMs`. The socket's own idle timer is used
 * while the body is being received (Node refreshes it on every read and write, without
 * putting the body into flowing mode), and switched off once the body has ended.
 */
function boundBodyIdle(app: FastifyInstance, idleMs: number, logger: Logger): void {
  app.addHook("onRequest", (req, reply, done) => {
    const raw = req.raw;
    const hasBody =
      raw.headers["transfer-encoding"] !== undefined || Number(raw.headers["content-length"] ?? 0) > 0;
    // Most bodies arrived with their headers: nothing to wait for.
    if (!hasBody || raw.complete) {
      done();
      return;
    }
    const socket = raw.socket;
    const onTimeout = () => {
      logger.warn(
        { method: raw.method, url: raw.url?.slice(0, 200), idleMs },
        "request body stalled: connection cut",
      );
      socket.destroy();
    };
    const clear = () => {
      socket.off("timeout", onTimeout);
      socket.off("close", clear);
      raw.off("end", clear);
      // A body can end after its answer (an early refusal; Node then drains the body): the
      // socket's timer is Node's keep-alive one by then, and stays.
      if (!socket.destroyed && !reply.raw.writableFinished) socket.setTimeout(app.server.timeout);
    };
    socket.setTimeout(idleMs);
    socket.on("timeout", onTimeout);
    raw.once("end", clear);
    socket.once("close", clear);
    done();
  });
}

/** Listens and returns the base URL (port 0 picks a free port). */
export async function listen(app: FastifyInstance, host: string, port: number): Promise<string> {
  await app.listen({ host, port });
  const addr = app.server.address();
  if (addr === null || typeof addr === "string") throw new Error("server has no TCP address");
  const shown = host === "0.0.0.0" || host === "::" ? "localhost" : host;
  return `http://${shown}:${addr.port}`;
}
