import type { IncomingHttpHeaders } from "node:http";
import type { Logger } from "@dnah/platform";
import { connectErrorEndFrame } from "@dnah/platform/connect-parse-errors";
import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from "fastify";
import { UnavailableError } from "../errors.js";
import type { ApiKeyVerifier } from "./api-keys.js";

declare module "fastify" {
  interface FastifyRequest {
    /**
     * The id of the API key the request was authenticated with (set by the auth hook on the
     * routes it guards; "" elsewhere): the owner of the templates it builds.
     */
    apiKeyId: string;
  }
}

export const MISSING_KEY_MESSAGE = "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'";
export const INVALID_KEY_MESSAGE = "invalid API key";

/** The key a request carries: `Authorization: Bearer <key>` first, then `X-API-Key`. */
export function apiKeyFromHeaders(headers: IncomingHttpHeaders): string | undefined {
  // Node lower-cases header names, so both headers are matched case-insensitively.
  const auth = headers.authorization;
  if (typeof auth === "string") {
    const m = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(auth);
    if (m?.[1] !== undefined) return m[1];
  }
  const x = headers["x-api-key"];
  const v = (Array.isArray(x) ? x[0] : x)?.trim();
  return v === undefined || v === "" ? undefined : v;
}

export interface AuthHookOptions {
  verifier: ApiKeyVerifier;
  logger: Logger;
  /** Requests that need no key. */
  isPublic: (req: FastifyRequest) => boolean;
  /** Path prefixes of Connect services: their rejections speak the caller's RPC protocol. */
  connectPrefixes: readonly string[];
}

/**
 * One gate for REST and Connect alike, run before the body is read, so an unauthenticated
 * caller cannot make the gateway buffer anything.
 */
export function createAuthHook(opts: AuthHookOptions): onRequestAsyncHookHandler {
  return async (req, reply) => {
    if (opts.isPublic(req)) return;
    const key = apiKeyFromHeaders(req.headers);
    if (key === undefined) return reject(req, reply, opts.connectPrefixes, MISSING_KEY_MESSAGE);
    let id: string | undefined;
    try {
      id = await opts.verifier.identify(key);
    } catch (err) {
      opts.logger.warn({ err, requestId: req.requestId }, "cannot verify an API key");
      throw new UnavailableError("cannot verify the API key right now; retry", { cause: err });
    }
    if (id === undefined) return reject(req, reply, opts.connectPrefixes, INVALID_KEY_MESSAGE);
    req.apiKeyId = id;
  };
}

function reject(
  req: FastifyRequest,
  reply: FastifyReply,
  connectPrefixes: readonly string[],
  message: string,
) {
  const path = req.url.split("?", 1)[0] ?? "";
  const contentType = String(req.headers["content-type"] ?? "").toLowerCase();
  if (connectPrefixes.some((p) => path.startsWith(p))) {
    if (contentType.startsWith("application/grpc")) {
      // gRPC and gRPC-web: a trailers-only response carries the status in the headers.
      return reply
        .code(200)
        .header("content-type", contentType)
        .header("grpc-status", "16")
        .header("grpc-message", encodeURIComponent(message))
        .send();
    }
    if (contentType.startsWith("application/connect+")) {
      // Connect streaming: HTTP 200 and an end-of-stream frame (flags 0x02) with the error.
      return reply
        .code(200)
        .header("content-type", contentType)
        .send(connectErrorEndFrame("unauthenticated", message));
    }
  }
  // REST, and Connect unary, whose error wire format is exactly this.
  return reply
    .code(401)
    .header("www-authenticate", 'Bearer realm="dnah"')
    .type("application/json")
    .send({ code: "unauthenticated", message });
}
