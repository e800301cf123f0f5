import { randomUUID } from "node:crypto";
import type { onRequestAsyncHookHandler } from "fastify";

declare module "fastify" {
  interface FastifyRequest {
    /** Names the request in logs and in internal-error messages; echoed as X-Request-Id. */
    requestId: string;
  }
}

export const REQUEST_ID_HEADER = "x-request-id";
const SANE_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/**
 * Adopts a caller's X-Request-Id when it looks sane, else makes one. It is also written into
 * the raw request headers so that Connect handlers (which only see headers) read the same id.
 */
export const requestIdHook: onRequestAsyncHookHandler = async (req, reply) => {
  const incoming = req.headers[REQUEST_ID_HEADER];
  const id = typeof incoming === "string" && SANE_ID.test(incoming) ? incoming : randomUUID();
  req.requestId = id;
  req.raw.headers[REQUEST_ID_HEADER] = id;
  reply.header(REQUEST_ID_HEADER, id);
};

/** The request id for a Connect handler (set by the hook; made up if it is somehow absent). */
export function requestIdOf(headers: Headers): string {
  return headers.get(REQUEST_ID_HEADER) ?? randomUUID();
}
