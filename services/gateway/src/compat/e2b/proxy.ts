import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { isIP } from "node:net";
import { type Logger, TunnelError } from "@dnah/platform";
import type { onRequestHookHandler } from "fastify";
import { findCause } from "../../errors.js";
import type { ActivitySink } from "../../sandbox/activity.js";
import { pipeThroughAgent, sendJson } from "../../sandbox/http-proxy.js";
import {
  BAD_SANDBOX_ID_STATUS,
  badSandboxIdBody,
  SANDBOX_NOT_FOUND_STATUS,
  sandboxNotFoundBody,
  UNROUTED_SIGNATURE_STATUS,
  unroutedSignatureBody,
} from "./errors.js";
import type { SandboxTunnels } from "./tunnels.js";

/** envd's port; the SDK always names it, this is the fallback. */
export const ENVD_PORT = 49983;
const SANDBOX_ID_RE = /^[a-z0-9]+$/;
const HOST_RE = /^(\d{1,5})-([^.]+)\.(.+)$/;

export type SandboxTarget = { sandboxId: string; port: number } | { invalid: string };

/**
 * Whether a request is E2B sandbox traffic and where it goes (spec §1.1): an `E2b-Sandbox-Id`
 * header wins (port from `E2b-Sandbox-Port`, default envd's); otherwise a Host
 * `<port>-<id>.<domain>` that is neither `localhost` nor an IP. Control-API requests carry
 * neither and get undefined.
 */
export function sandboxTarget(headers: IncomingHttpHeaders): SandboxTarget | undefined {
  const id = one(headers["e2b-sandbox-id"]);
  if (id !== undefined) {
    if (!SANDBOX_ID_RE.test(id) || id.length > 128) return { invalid: id };
    const rawPort = one(headers["e2b-sandbox-port"]);
    const port = rawPort === undefined ? ENVD_PORT : portOf(rawPort);
    return port === undefined ? { invalid: id } : { sandboxId: id, port };
  }
  const host = (one(headers.host) ?? "").toLowerCase();
  const name = host.startsWith("[") ? host : host.replace(/:\d+$/, "");
  if (name === "" || name === "localhost" || isIP(name.replace(/^\[|\]$/g, "")) !== 0) return undefined;
  const m = HOST_RE.exec(name);
  if (m === null) return undefined;
  const port = portOf(m[1]!);
  const sandboxId = m[2]!;
  if (port === undefined || !SANDBOX_ID_RE.test(sandboxId)) return { invalid: sandboxId };
  return { sandboxId, port };
}

/**
 * The first onRequest hook for sandbox traffic: hijacks the reply, so Fastify neither parses
 * the body nor runs the API-key hook (envd authenticates these requests with its access
 * token), and pipes the request to the sandbox port through a tunnel, bytes unchanged both
 * ways. Anything else continues down the normal Fastify lifecycle.
 */
export function createProxyHook(
  tunnels: SandboxTunnels,
  logger: Logger,
  activity: ActivitySink,
  /**
   * Routes a request that names no sandbox (a signed `/files` URL): undefined when it is not
   * one (the request continues to the API), else a promise of its sandbox (undefined: none).
   */
  unnamed?: (url: string, method: string) => Promise<string | undefined> | undefined,
  /** Answers an envd request itself (share files, `share-files.ts`): false sends it on to envd. */
  local?: (sandboxId: string, req: IncomingMessage, res: ServerResponse) => Promise<boolean>,
): onRequestHookHandler {
  return (req, reply, done) => {
    const target = sandboxTarget(req.headers);
    const send = (t: { sandboxId: string; port: number }) =>
      (t.port === ENVD_PORT && local ? local(t.sandboxId, req.raw, reply.raw) : Promise.resolve(false))
        .then((served) =>
          served ? undefined : proxy(tunnels, logger, activity, t, req.raw, reply.raw, req.requestId),
        )
        .catch((err: unknown) => {
          logger.warn({ err, "sandbox.id": t.sandboxId, requestId: req.requestId }, "sandbox proxy failed");
          if (!reply.raw.headersSent)
            sendJson(reply.raw, SANDBOX_NOT_FOUND_STATUS, sandboxNotFoundBody(t.sandboxId));
          else reply.raw.destroy();
        });
    if (target === undefined) {
      const found = unnamed?.(req.raw.url ?? "/", req.method);
      if (found === undefined) {
        done();
        return;
      }
      reply.hijack();
      found.then(
        (sandboxId) => {
          if (sandboxId !== undefined) return send({ sandboxId, port: ENVD_PORT });
          req.raw.resume();
          sendJson(reply.raw, UNROUTED_SIGNATURE_STATUS, unroutedSignatureBody());
        },
        (err: unknown) => {
          logger.warn({ err, requestId: req.requestId }, "cannot route a signed sandbox URL");
          req.raw.resume();
          sendJson(reply.raw, 503, { code: 503, message: "cannot route the signed URL right now; retry" });
        },
      );
      return;
    }
    reply.hijack();
    if ("invalid" in target) {
      req.raw.resume();
      sendJson(reply.raw, BAD_SANDBOX_ID_STATUS, badSandboxIdBody());
      return;
    }
    void send(target);
  };
}

async function proxy(
  tunnels: SandboxTunnels,
  logger: Logger,
  activity: ActivitySink,
  target: { sandboxId: string; port: number },
  req: IncomingMessage,
  res: ServerResponse,
  requestId: string,
): Promise<void> {
  const agent = await tunnels.agent(target.sandboxId, target.port);
  if (agent === undefined) {
    req.resume();
    sendJson(res, SANDBOX_NOT_FOUND_STATUS, sandboxNotFoundBody(target.sandboxId));
    return;
  }
  // Counted ("PROXY e2b sandbox traffic" in ACTIVITY_ROUTES): active while the request is open.
  const release = activity.hold(target.sandboxId);
  try {
    await pipeThroughAgent(agent, req, res, {
      path: req.url ?? "/",
      onCut: (err) =>
        logger.debug({ err, "sandbox.id": target.sandboxId, requestId }, "sandbox response cut"),
    });
  } catch (err) {
    const tunnel = findCause(err, (e): e is TunnelError => e instanceof TunnelError);
    if (tunnel?.status === 404) tunnels.forget(target.sandboxId);
    throw err;
  } finally {
    release();
  }
}

function one(v: string | string[] | undefined): string | undefined {
  const s = (Array.isArray(v) ? v[0] : v)?.trim();
  return s === undefined || s === "" ? undefined : s;
}

function portOf(s: string): number | undefined {
  if (!/^\d{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : undefined;
}
