import { type IncomingHttpHeaders, type IncomingMessage, request, type ServerResponse } from "node:http";
import { isIP } from "node:net";
import { type Logger, TunnelError } from "@dnah/platform";
import type { onRequestHookHandler } from "fastify";
import { findCause } from "../../errors.js";
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
/** RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy ones proxies also drop. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

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
  /**
   * Routes a request that names no sandbox (a signed `/files` URL): undefined when it is not
   * one (the request continues to the API), else a promise of its sandbox (undefined: none).
   */
  unnamed?: (url: string, method: string) => Promise<string | undefined> | undefined,
): onRequestHookHandler {
  return (req, reply, done) => {
    const target = sandboxTarget(req.headers);
    const send = (t: { sandboxId: string; port: number }) =>
      proxy(tunnels, logger, t, req.raw, reply.raw, req.requestId).catch((err: unknown) => {
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
  await new Promise<void>((resolve, reject) => {
    const upstream = request({
      agent,
      method: req.method,
      path: req.url ?? "/",
      headers: forwardHeaders(req.headers, req.rawHeaders).flat(),
    });
    // The client going away (before the answer is complete) cancels the upstream call: a
    // Connect stream then ends in the sandbox as it would with a direct connection.
    res.once("close", () => {
      if (!res.writableFinished) upstream.destroy();
      resolve();
    });
    upstream.on("response", (up) => {
      res.writeHead(up.statusCode ?? 502, up.statusMessage, responseHeaders(up.rawHeaders).flat());
      // Send the head now, not with the first body byte: a streamed answer that stays quiet
      // (a code-interpreter cell) must not hold back the headers the client's timers wait for.
      res.flushHeaders();
      up.on("end", () => {
        if (up.rawTrailers.length > 0) res.addTrailers(pairs(up.rawTrailers));
      });
      up.on("error", (err) => {
        logger.debug({ err, "sandbox.id": target.sandboxId, requestId }, "sandbox response cut");
        res.destroy();
      });
      up.pipe(res);
    });
    upstream.on("error", (err) => {
      const tunnel = findCause(err, (e): e is TunnelError => e instanceof TunnelError);
      if (tunnel?.status === 404) tunnels.forget(target.sandboxId);
      if (res.headersSent) {
        res.destroy();
        resolve();
      } else reject(err);
    });
    req.pipe(upstream);
  });
}

/** Everything but hop-by-hop headers and those `Connection` names, in the original spelling. */
function forwardHeaders(headers: IncomingHttpHeaders, raw: readonly string[]): [string, string][] {
  const drop = new Set(HOP_BY_HOP);
  for (const token of String(headers.connection ?? "").split(",")) drop.add(token.trim().toLowerCase());
  // Node re-frames the body: chunked when no Content-Length was given.
  return pairs(raw).filter(([k]) => !drop.has(k.toLowerCase()));
}

function responseHeaders(raw: readonly string[]): [string, string][] {
  const all = pairs(raw);
  const connection = all.find(([k]) => k.toLowerCase() === "connection")?.[1] ?? "";
  const drop = new Set(HOP_BY_HOP);
  for (const token of connection.split(",")) drop.add(token.trim().toLowerCase());
  return all.filter(([k]) => !drop.has(k.toLowerCase()));
}

function pairs(raw: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
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
