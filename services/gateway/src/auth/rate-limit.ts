import { createHash } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { Code } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "@dnah/platform";
import { connectErrorEndFrame } from "@dnah/platform/connect-parse-errors";
import rateLimit from "@fastify/rate-limit";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { toDaytonaError } from "../compat/daytona/errors.js";
import { PREVIEW_TOKEN_HEADER, PREVIEW_TOKEN_QUERY } from "../compat/daytona/preview.js";
import { toE2bError } from "../compat/e2b/errors.js";
import { sandboxTarget } from "../compat/e2b/proxy.js";
import { requestsPerWindow } from "../config.js";
import { ERROR_TABLE, RateLimitedError } from "../errors.js";
import { apiKeyFromHeaders } from "./hook.js";

/**
 * Distinct callers whose counts are kept (LRU). One entry is ~100 bytes; a caller pushed out
 * starts a fresh window, so this must exceed the callers active within one window.
 */
const TRACKED_CALLERS = 100_000;
const CONNECT_CODE = codeToString(ERROR_TABLE.rate_limited.connectCode);
/** gRPC's numeric status for the same code (trailers-only answers). */
const GRPC_STATUS = String(Code.ResourceExhausted);

export interface RateLimitOptions {
  /** Requests per minute per caller, averaged over `windowMs`; 0 installs nothing. */
  perMinute: number;
  windowMs: number;
  /** Requests never counted (health, the API's documents); E2B sandbox traffic is always counted. */
  isExempt: (req: FastifyRequest) => boolean;
  /** Path prefixes of Connect services: their 429 speaks the caller's RPC protocol. */
  connectPrefixes: readonly string[];
  logger: Logger;
}

/**
 * Who a request is counted against, from the credential it carries, never the credential
 * itself: the SHA-256 of its API key (Bearer / X-API-Key), else of its envd access token
 * (E2B sandbox traffic), else of its Daytona preview token; a request with none of these is
 * counted against its client IP (the plugin's IPv6 /64 grouping does not apply here). An
 * unknown key gets its own count too; the auth hooks reject it right after.
 */
export function rateLimitKey(req: { headers: IncomingHttpHeaders; url: string; ip: string }): string {
  const apiKey = apiKeyFromHeaders(req.headers);
  if (apiKey !== undefined) return `key:${sha256(apiKey)}`;
  const access = one(req.headers["x-access-token"]);
  if (access !== undefined) return `envd:${sha256(access)}`;
  const preview = one(req.headers[PREVIEW_TOKEN_HEADER]) ?? previewTokenInQuery(req.url);
  if (preview !== undefined) return `preview:${sha256(preview)}`;
  return `ip:${req.ip}`;
}

/**
 * Installs the per-caller request limit (@fastify/rate-limit's counting, fixed windows in
 * memory) as an onRequest hook. Call it where the hook must run: before the E2B proxy hook,
 * which hijacks sandbox traffic, and before the API-key hook, so a flood is refused without a
 * key lookup. The count is per gateway process: N gateways allow N times the limit; a shared
 * store (Redis) would fix that and is deliberately not used.
 *
 * Over the limit the answer is 429 with `Retry-After` in the surface's own shape: Connect's
 * `resource_exhausted` for RPCs (SandboxService and envd's process / filesystem services),
 * E2B's body for other envd traffic, Daytona's for preview links; everything else is thrown
 * as RateLimitedError to its route's error handler (native, E2B control API, Daytona API and
 * toolbox), each of which maps it with its own table.
 */
export async function installRateLimit(app: FastifyInstance, opts: RateLimitOptions): Promise<void> {
  if (opts.perMinute === 0) return;
  const max = requestsPerWindow({ rateLimitPerMinute: opts.perMinute, rateLimitWindowMs: opts.windowMs });
  await app.register(rateLimit, {
    // Counting only: this hook answers, in each surface's shape, rather than the plugin.
    global: false,
    max,
    timeWindow: opts.windowMs,
    cache: TRACKED_CALLERS,
    keyGenerator: rateLimitKey,
  });
  const count = app.createRateLimit();
  app.addHook("onRequest", async (req, reply) => {
    const envd = sandboxTarget(req.headers) !== undefined;
    if (!envd && opts.isExempt(req)) return;
    const r = await count(req);
    if (r.isAllowed || !r.isExceeded) return;
    const retryAfter = Math.max(1, r.ttlInSeconds);
    const windowS = Math.round(opts.windowMs / 1000);
    const err = new RateLimitedError(
      `rate limit exceeded: ${max} requests per ${windowS} s for this ${r.key.startsWith("ip:") ? "client" : "credential"}; retry in ${retryAfter} s`,
      retryAfter,
    );
    reply.header("retry-after", String(retryAfter));
    reply.header("x-ratelimit-limit", String(max));
    reply.header("x-ratelimit-remaining", "0");
    reply.header("x-ratelimit-reset", String(retryAfter));
    const path = req.url.split("?", 1)[0] ?? "";
    if (isRpc(req) || opts.connectPrefixes.some((p) => path.startsWith(p)))
      return sendConnectError(req, reply, err);
    if (envd) {
      const e = toE2bError(err, { logger: opts.logger, requestId: req.requestId });
      return reply.code(e.status).type("application/json").send(e.body);
    }
    if (path.startsWith("/preview/")) {
      // Preview links answer from a hijacked route-level hook: no error handler of Daytona's.
      const e = toDaytonaError(err, {
        logger: opts.logger,
        requestId: req.requestId,
        source: "DAYTONA_PROXY",
        method: req.method,
        path: req.url,
      });
      return reply.code(e.status).type("application/json").send(e.body);
    }
    throw err;
  });
}

/** Connect, gRPC and gRPC-web requests, whatever their path (envd's services included). */
function isRpc(req: FastifyRequest): boolean {
  const ct = String(req.headers["content-type"] ?? "").toLowerCase();
  return (
    ct.startsWith("application/grpc") ||
    ct.startsWith("application/connect+") ||
    req.headers["connect-protocol-version"] !== undefined
  );
}

/** The error in the caller's RPC protocol: the clients map it to ResourceExhausted. */
function sendConnectError(req: FastifyRequest, reply: FastifyReply, err: RateLimitedError) {
  const contentType = String(req.headers["content-type"] ?? "").toLowerCase();
  if (contentType.startsWith("application/grpc")) {
    // gRPC and gRPC-web: a trailers-only response carries the status in the headers.
    return reply
      .code(200)
      .header("content-type", contentType)
      .header("grpc-status", GRPC_STATUS)
      .header("grpc-message", encodeURIComponent(err.message))
      .send();
  }
  if (contentType.startsWith("application/connect+")) {
    // Connect streaming: HTTP 200 and an end-of-stream frame (flags 0x02) with the error.
    return reply
      .code(200)
      .header("content-type", contentType)
      .send(connectErrorEndFrame(CONNECT_CODE, err.message));
  }
  // Connect unary (and GET): the JSON error body at the HTTP status of the code's table row.
  return reply
    .code(ERROR_TABLE.rate_limited.httpStatus)
    .type("application/json")
    .send({ code: CONNECT_CODE, message: err.message });
}

function previewTokenInQuery(url: string): string | undefined {
  const q = url.indexOf("?");
  if (q < 0 || !url.includes(PREVIEW_TOKEN_QUERY, q)) return undefined;
  return new URLSearchParams(url.slice(q + 1)).get(PREVIEW_TOKEN_QUERY) ?? undefined;
}

function sha256(s: string): string {
  return createHash("sha256").update(s, "utf8").digest("hex");
}

function one(v: string | string[] | undefined): string | undefined {
  const s = (Array.isArray(v) ? v[0] : v)?.trim();
  return s === undefined || s === "" ? undefined : s;
}
