import type { OutgoingHttpHeaders, ServerResponse } from "node:http";

/** What connect-es writes when a unary request body does not decode as protobuf. */
const PARSE_ERROR_RE = /^\{"code":"internal","message":"(parse binary: [^"\\]*)"\}$/;
/** The same, as a streaming call's end-of-stream frame (flags 0x02, then a JSON length). */
const END_FRAME_ERROR_RE = /^\{"error":\{"code":"internal","message":"(parse binary: [^"\\]*)"\}/;

/**
 * connect-es (serialization.ts) answers a request body that is not valid protobuf with
 * `internal`, HTTP 500, although the fault is the caller's: connect-go and the Connect protocol
 * call it `invalid_argument` (400), and a 500 would page an operator for a client's garbage.
 * The parse happens before any interceptor, so this rewrites exactly that one answer on its way
 * out of `res` (a unary call's 500 body, a streaming call's end frame); everything else passes
 * through untouched. Used by the gateway (its Connect services) and the guest agent (envd).
 * Kept free of dependencies: the guest bundles it (`@dnah/platform/connect-parse-errors`).
 */
export function recodeConnectParseErrors(res: ServerResponse): void {
  holdInternalErrors(res);
}

function holdInternalErrors(res: ServerResponse): void {
  const writeHead = res.writeHead.bind(res) as (
    status: number,
    headers?: OutgoingHttpHeaders,
  ) => ServerResponse;
  const write = res.write.bind(res) as (chunk: unknown, ...rest: unknown[]) => boolean;
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
  let held: OutgoingHttpHeaders | undefined;
  const release = (chunk: unknown): unknown => {
    const headers = held;
    if (headers === undefined) return chunk;
    held = undefined;
    const text =
      chunk instanceof Uint8Array || typeof chunk === "string" ? Buffer.from(chunk).toString() : "";
    const m = PARSE_ERROR_RE.exec(text);
    if (m === null) {
      writeHead(500, headers);
      return chunk;
    }
    const body = Buffer.from(JSON.stringify({ code: "invalid_argument", message: m[1] }));
    const { "content-length": _, ...rest } = headers;
    writeHead(400, { ...rest, "content-length": body.length });
    return body;
  };
  res.writeHead = ((status: number, headers?: OutgoingHttpHeaders) => {
    if (status !== 500 || typeof headers !== "object") return writeHead(status, headers);
    held = headers;
    return res;
  }) as ServerResponse["writeHead"];
  res.write = ((chunk: unknown, ...rest: unknown[]) =>
    write(endFrame(release(chunk)), ...rest)) as ServerResponse["write"];
  res.end = ((...args: unknown[]) => {
    if (held !== undefined && typeof args[0] !== "function" && args[0] !== undefined)
      args[0] = release(args[0]);
    else release(undefined);
    return end(...args);
  }) as ServerResponse["end"];
}

/** A streaming call's end frame that reports a parse error as `internal`, re-coded; else as is. */
function endFrame(chunk: unknown): unknown {
  if (!(chunk instanceof Uint8Array) || chunk.length < 5 || chunk[0] !== 0x02) return chunk;
  const m = END_FRAME_ERROR_RE.exec(Buffer.from(chunk.subarray(5)).toString());
  if (m === null) return chunk;
  return connectErrorEndFrame("invalid_argument", m[1] ?? "");
}

/** A Connect streaming call's end-of-stream frame (flags 0x02, length, JSON) carrying an error. */
export function connectErrorEndFrame(code: string, message: string): Buffer {
  const json = Buffer.from(JSON.stringify({ error: { code, message } }));
  const frame = Buffer.alloc(5 + json.length);
  frame.writeUInt8(0x02, 0);
  frame.writeUInt32BE(json.length, 1);
  json.copy(frame, 5);
  return frame;
}
