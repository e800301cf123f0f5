import type { DescService } from "@bufbuild/protobuf";
import { type Client, type ConnectRouter, createClient, type Interceptor } from "@connectrpc/connect";
import { fastifyConnectPlugin } from "@connectrpc/connect-fastify";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type FastifyInstance, type FastifyReply, fastify } from "fastify";
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
}

/** A Fastify server with the service's Connect routes mounted; `listen` is the caller's. */
export async function createServiceServer(opts: ServiceServerOptions): Promise<FastifyInstance> {
  const bodyLimit = opts.bodyLimitBytes ?? 64 * 1024 * 1024;
  const app = fastify({
    bodyLimit,
    logger: false,
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
  });
  return app;
}

/** Listens and returns the base URL (port 0 picks a free port). */
export async function listen(app: FastifyInstance, host: string, port: number): Promise<string> {
  await app.listen({ host, port });
  const addr = app.server.address();
  if (addr === null || typeof addr === "string") throw new Error("server has no TCP address");
  const shown = host === "0.0.0.0" || host === "::" ? "localhost" : host;
  return `http://${shown}:${addr.port}`;
}
