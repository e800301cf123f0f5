import { timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { FailedPreconditionError, SandboxNotFoundError } from "../../errors.js";
import { pipeThroughAgent, sendJson } from "../../sandbox/http-proxy.js";
import type { DaytonaContext } from "./context.js";
import { type DaytonaRow, daytonaSandboxById } from "./db.js";
import { DaytonaHttpError, type DaytonaSource, toDaytonaError } from "./errors.js";

export const PREVIEW_TOKEN_HEADER = "x-daytona-preview-token";
export const PREVIEW_TOKEN_QUERY = "DAYTONA_SANDBOX_AUTH_KEY";
const PATH_RE = /^\/preview\/([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\/(\d{1,5})(\/[^?]*)?(\?.*)?$/;
/** The preview token: the app in the sandbox never sees it. */
const DROP: ReadonlySet<string> = new Set([PREVIEW_TOKEN_HEADER]);
const SOURCE: DaytonaSource = "DAYTONA_PROXY";

/**
 * Preview links (spec §5.4): `/<any method> /preview/<sandboxId>/<port>/<path>` is proxied to
 * `<path>` on that port inside the sandbox, bytes unchanged. A private sandbox needs its
 * preview token (`X-Daytona-Preview-Token` or `?DAYTONA_SANDBOX_AUTH_KEY=`); an API key alone
 * does not open it. A port nothing listens on answers 502 with source DAYTONA_PROXY. Each
 * request counts as activity (auto-stop). HTTP only: WebSocket upgrades are not proxied.
 */
export async function previewRoutes(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  // An onRequest handler: the body is never parsed, it is streamed to the sandbox as is.
  const handler = (req: FastifyRequest, reply: FastifyReply) => {
    reply.hijack();
    serve(ctx, req, reply.raw).catch((err: unknown) => {
      req.raw.resume();
      const e = toDaytonaError(err, {
        logger: ctx.logger,
        requestId: req.requestId,
        source: SOURCE,
        method: req.method,
        path: req.url,
      });
      if (reply.raw.headersSent) reply.raw.destroy();
      else sendJson(reply.raw, e.status, e.body);
    });
  };
  app.route({
    method: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    url: "/preview/*",
    onRequest: handler,
    handler: async () => undefined,
  });
}

async function serve(ctx: DaytonaContext, req: FastifyRequest, res: ServerResponse): Promise<void> {
  const m = PATH_RE.exec(req.url);
  if (m === null)
    throw new DaytonaHttpError(404, "NOT_FOUND", "preview URLs look like /preview/<sandboxId>/<port>/");
  const sandboxId = m[1]!;
  const port = Number(m[2]);
  if (port < 1 || port > 65_535)
    throw new DaytonaHttpError(400, "BAD_REQUEST", "port must be from 1 to 65535");
  const row = await daytonaSandboxById(ctx.db, sandboxId);
  if (row === undefined) throw new SandboxNotFoundError(sandboxId);
  const query = new URLSearchParams(m[4]?.slice(1) ?? "");
  if (!row.public && !tokenMatches(row, req.headers, query.get(PREVIEW_TOKEN_QUERY)))
    throw new DaytonaHttpError(
      401,
      "UNAUTHORIZED",
      `preview of a private sandbox: send its token in X-Daytona-Preview-Token or ?${PREVIEW_TOKEN_QUERY}=`,
    );
  if (row.state !== "started") throw new FailedPreconditionError(`Sandbox ${sandboxId} is ${row.state}`);
  query.delete(PREVIEW_TOKEN_QUERY);
  const qs = query.toString();
  const path = (m[3] ?? "/") + (qs === "" ? "" : `?${qs}`);
  ctx.touch(sandboxId);
  // Counted (ACTIVITY_ROUTES "handler"): active for as long as the request is proxied.
  const release = ctx.deps.activity.hold(sandboxId);
  try {
    await proxy(ctx, sandboxId, port, path, req.raw, res);
  } finally {
    release();
  }
}

function tokenMatches(row: DaytonaRow, headers: IncomingHttpHeaders, fromQuery: string | null): boolean {
  const h = headers[PREVIEW_TOKEN_HEADER];
  return sameToken((Array.isArray(h) ? h[0] : h) ?? fromQuery ?? "", row.preview_token);
}

/** Constant-time comparison of a given token with the sandbox's. */
export function sameToken(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

async function proxy(
  ctx: DaytonaContext,
  sandboxId: string,
  port: number,
  path: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const agent = await ctx.deps.agents.tunnel(sandboxId, port);
  try {
    await pipeThroughAgent(agent, req, res, { path, dropRequestHeaders: DROP });
  } catch (err) {
    // Nothing listens on the port, or the sandbox went away mid-request.
    ctx.logger.debug({ err, "sandbox.id": sandboxId, port }, "preview upstream failed");
    throw new DaytonaHttpError(
      502,
      "BAD_GATEWAY",
      `nothing answered on port ${port} in sandbox ${sandboxId}`,
      {
        cause: err,
      },
    );
  }
}
