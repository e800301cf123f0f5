import type { Agent, IncomingMessage, ServerResponse } from "node:http";
import { request } from "node:http";

/** RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy ones proxies also drop. */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
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

export interface PipeOptions {
  /** Request target sent to the sandbox port (path and query). */
  readonly path: string;
  /** More request headers (lower case) the sandbox must not see, e.g. a proxy token. */
  readonly dropRequestHeaders?: ReadonlySet<string>;
  /** Called when the upstream answer breaks after its head was sent (the reply is cut). */
  readonly onCut?: (err: Error) => void;
}

/**
 * One HTTP exchange with a sandbox port through `agent` (a vmm tunnel): the request's method,
 * headers (less hop-by-hop ones and those its `Connection` names) and body go up unparsed; the
 * answer's status, headers and body (and trailers) come back the same way. The response head
 * is flushed at once, so a streamed answer that stays quiet does not hold back the headers a
 * client's timers wait for. The client going away cancels the upstream call.
 *
 * Resolves when the exchange is over. Rejects with the upstream error only when nothing was
 * sent to the client yet, so the caller can answer with its own error body.
 */
export function pipeThroughAgent(
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
  opts: PipeOptions,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const upstream = request({
      agent,
      method: req.method,
      path: opts.path,
      headers: withoutHopByHop(req.rawHeaders, opts.dropRequestHeaders).flat(),
    });
    res.once("close", () => {
      if (!res.writableFinished) upstream.destroy();
      resolve();
    });
    upstream.on("response", (up) => {
      res.writeHead(up.statusCode ?? 502, up.statusMessage, withoutHopByHop(up.rawHeaders).flat());
      res.flushHeaders();
      up.on("end", () => {
        if (up.rawTrailers.length > 0) res.addTrailers(pairs(up.rawTrailers));
      });
      up.on("error", (err) => {
        opts.onCut?.(err);
        res.destroy();
      });
      up.pipe(res);
    });
    upstream.on("error", (err) => {
      if (res.headersSent) {
        res.destroy();
        resolve();
      } else reject(err);
    });
    req.pipe(upstream);
  });
}

/** Header pairs, in their original spelling, less hop-by-hop ones, those `Connection` names and `extra`. */
export function withoutHopByHop(raw: readonly string[], extra?: ReadonlySet<string>): [string, string][] {
  const all = pairs(raw);
  const drop = new Set(HOP_BY_HOP);
  for (const [k, v] of all) {
    if (k.toLowerCase() !== "connection") continue;
    for (const token of v.split(",")) drop.add(token.trim().toLowerCase());
  }
  for (const k of extra ?? []) drop.add(k);
  // Node re-frames the body: chunked when no Content-Length was given.
  return all.filter(([k]) => !drop.has(k.toLowerCase()));
}

function pairs(raw: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

/** A JSON answer on a hijacked reply (the proxies answer outside Fastify's reply). */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
