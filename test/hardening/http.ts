import { request } from "node:http";
import { connect } from "node:net";

export interface RawAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  /** True when the server upgraded the connection (a WebSocket handshake succeeded). */
  readonly upgraded: boolean;
}

export interface RawRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** Per-request bound: a server that neither answers nor closes by then has hung. */
  timeoutMs?: number;
}

/**
 * One HTTP/1.1 request through node:http, which (unlike fetch) sends any method (TRACE,
 * QUERY), any path bytes, and reports an upgrade instead of hiding it.
 */
export function rawRequest(base: string, r: RawRequest): Promise<RawAnswer> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({
      host: u.hostname,
      port: u.port,
      method: r.method,
      path: r.path,
      headers: r.headers,
      // Each case on its own connection: one case's damage cannot leak into the next.
      agent: false,
      insecureHTTPParser: true,
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no answer within ${r.timeoutMs ?? 10_000} ms`));
    }, r.timeoutMs ?? 10_000);
    req.on("upgrade", (res, socket) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.alloc(0), upgraded: true });
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        clearTimeout(timer);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          upgraded: false,
        });
      });
      res.on("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    req.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(r.body);
  });
}

/**
 * Raw bytes on a fresh TCP connection (request lines node:http refuses to send: NUL bytes,
 * bare CRs, invalid header names); returns what the server wrote before closing, or by the bound.
 */
export function rawBytes(base: string, bytes: Buffer | string, timeoutMs = 10_000): Promise<string> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(u.port), u.hostname);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on("data", (c: Buffer) => {
      chunks.push(c);
      // One response is enough: stop at the end of a Content-Length body.
      const text = Buffer.concat(chunks).toString("latin1");
      const head = text.indexOf("\r\n\r\n");
      const len = /content-length: *(\d+)/i.exec(text)?.[1];
      if (head >= 0 && len !== undefined && text.length >= head + 4 + Number(len)) {
        clearTimeout(timer);
        sock.destroy();
        resolve(text);
      }
    });
    sock.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString("latin1"));
    });
    sock.on("error", (err) => {
      clearTimeout(timer);
      if (chunks.length > 0) resolve(Buffer.concat(chunks).toString("latin1"));
      else reject(err);
    });
    sock.end(bytes);
  });
}

/** A failure reason when an answer leaks internals (a stack trace, source paths), else undefined. */
export function leak(body: string): string | undefined {
  if (/\n\s+at /.test(body)) return "stack trace in the body";
  if (/\/src\/|node_modules|\.ts:\d+|\.js:\d+/.test(body)) return "source path in the body";
  return undefined;
}

/** The WebSocket handshake headers (a fixed key: the server only hashes it). */
export const UPGRADE_HEADERS: Record<string, string> = {
  connection: "Upgrade",
  upgrade: "websocket",
  "sec-websocket-version": "13",
  "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
};
