import type { IncomingHttpHeaders } from "node:http";
import type { Readable } from "node:stream";
import { toHttpError } from "../errors.js";
import type { Logger } from "../log.js";

/** What the routes need of node's http1 and http2-compat requests. */
export interface HttpRequest extends Readable {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly httpVersionMajor: number;
  readonly complete: boolean;
}

/** What the routes need of node's http1 and http2-compat responses. */
export interface HttpResponse {
  statusCode: number;
  readonly headersSent: boolean;
  readonly writableEnded: boolean;
  setHeader(name: string, value: string | number | readonly string[]): unknown;
  write(chunk: Uint8Array | string, cb?: (err?: Error | null) => void): boolean;
  end(chunk?: Uint8Array | string): unknown;
  once(event: "finish" | "close" | "drain", listener: () => void): unknown;
  destroy(err?: Error): unknown;
}

/** A plain-HTTP failure with its own status (413, 405, 406, 416…), beside the domain errors. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "HttpError";
  }
}

export function sendJson(res: HttpResponse, status: number, body: unknown): void {
  const data = Buffer.from(JSON.stringify(body));
  res.statusCode = status;
  res.setHeader("Content-Type", "application/json");
  res.setHeader("Content-Length", data.length);
  res.end(data);
}

/** envd's error body: `{"code": <status>, "message": "…"}`. */
export function sendError(res: HttpResponse, status: number, message: string): void {
  if (res.headersSent) {
    res.destroy(new Error(message));
    return;
  }
  const data = Buffer.from(JSON.stringify({ code: status, message }));
  res.statusCode = status;
  res.setHeader("Content-Type", "application/json; charset=utf-8");
  res.setHeader("X-Content-Type-Options", "nosniff");
  res.setHeader("Content-Length", data.length);
  res.end(data);
}

export function sendNoContent(res: HttpResponse, headers: Record<string, string> = {}): void {
  res.statusCode = 204;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.end();
}

/** Any error from a route → a JSON error response (never a crash). */
export function sendFailure(res: HttpResponse, err: unknown, log: Logger, route: string): void {
  if (err instanceof HttpError) {
    sendError(res, err.status, err.message);
    return;
  }
  const { status, message } = toHttpError(err, log, route);
  sendError(res, status, message);
}

/** Reads a whole (small) body, refusing more than `maxBytes` with 413. */
export async function readBody(req: HttpRequest, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > maxBytes) throw new HttpError(413, `request body larger than ${maxBytes} bytes`);
    chunks.push(buf);
  }
  return Buffer.concat(chunks);
}

/** Makes sure an unread request body does not keep the connection busy after an early answer. */
export function discardRestOfBody(req: HttpRequest, res: HttpResponse): void {
  if (req.complete) return;
  if (req.httpVersionMajor < 2 && !res.headersSent) res.setHeader("Connection", "close");
  res.once("finish", () => req.destroy());
}
