import type { Stats } from "node:fs";
import { type FileHandle, open, stat } from "node:fs/promises";
import { basename, extname } from "node:path";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import type { AgentContext } from "../context.js";
import { errnoOf, fsError, GuestError } from "../errors.js";
import { resolvePath } from "../paths.js";
import { chooseEncoding, identityAcceptable } from "./encoding.js";
import { authorizeFileRequest } from "./file-access.js";
import { HttpError, type HttpRequest, type HttpResponse } from "./respond.js";

const CONTENT_TYPES: Record<string, string> = {
  ".txt": "text/plain; charset=utf-8",
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".csv": "text/csv; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".pdf": "application/pdf",
  ".zip": "application/zip",
  ".gz": "application/gzip",
};

/**
 * `GET /files?path=&username=`: the file's bytes, gzip-encoded when accepted, a single byte
 * range honoured. Missing → 404, directory → 400, unknown user or bad signature → 401.
 */
export async function getFiles(
  ctx: AgentContext,
  req: HttpRequest,
  res: HttpResponse,
  url: URL,
): Promise<void> {
  const access = await authorizeFileRequest(ctx, req, url, "read");
  const { user } = access;
  const path = access.path ?? "";
  const resolved = resolvePath(path, user, ctx.state.defaultWorkdir);

  let st: Stats;
  try {
    st = await stat(resolved);
  } catch (err) {
    if (errnoOf(err) === "ENOENT") throw new GuestError("not_found", `path '${resolved}' does not exist`);
    throw fsError(err, `error checking if path exists '${resolved}'`);
  }
  if (st.isDirectory()) throw new HttpError(400, `path '${resolved}' is a directory`);

  const accept = headerString(req.headers["accept-encoding"]);
  const rangeHeader = headerString(req.headers.range);
  let encoding = chooseEncoding(accept);
  if (rangeHeader !== undefined) {
    if (!identityAcceptable(accept)) {
      throw new HttpError(406, "identity encoding not acceptable for Range or conditional request");
    }
    encoding = "identity";
  }

  res.setHeader("Content-Disposition", contentDisposition(basename(resolved)));
  res.setHeader("Content-Type", CONTENT_TYPES[extname(resolved).toLowerCase()] ?? "application/octet-stream");
  res.setHeader("Vary", "Accept-Encoding");
  res.setHeader("Last-Modified", st.mtime.toUTCString());

  let file: FileHandle;
  try {
    file = await open(resolved, "r");
  } catch (err) {
    throw fsError(err, `error opening file '${resolved}'`);
  }
  const out = res as unknown as NodeJS.WritableStream;
  if (encoding === "gzip") {
    res.setHeader("Content-Encoding", "gzip");
    res.statusCode = 200;
    // The read stream owns the handle from here on and closes it, also on failure.
    await pipeline(file.createReadStream(), createGzip(), out);
    return;
  }
  res.setHeader("Accept-Ranges", "bytes");
  const range = rangeHeader === undefined ? undefined : parseRange(rangeHeader, st.size);
  if (range === "unsatisfiable") {
    await file.close();
    res.setHeader("Content-Range", `bytes */${st.size}`);
    throw new HttpError(416, "invalid range: failed to overlap");
  }
  if (range) {
    res.statusCode = 206;
    res.setHeader("Content-Range", `bytes ${range.start}-${range.end}/${st.size}`);
    res.setHeader("Content-Length", range.end - range.start + 1);
    await pipeline(file.createReadStream({ start: range.start, end: range.end }), out);
    return;
  }
  res.statusCode = 200;
  res.setHeader("Content-Length", st.size);
  await pipeline(file.createReadStream(), out);
}

function headerString(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(", ") : v;
}

/** One `bytes=` range; anything else (several ranges, other units) serves the whole file. */
function parseRange(
  header: string,
  size: number,
): { start: number; end: number } | "unsatisfiable" | undefined {
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return undefined;
  const [, a = "", b = ""] = m;
  if (a === "" && b === "") return undefined;
  if (a === "") {
    const n = Number(b);
    if (n === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  if (start >= size) return "unsatisfiable";
  const end = b === "" ? size - 1 : Math.min(Number(b), size - 1);
  if (end < start) return undefined;
  return { start, end };
}

/** Go's `mime.FormatMediaType("inline", {filename})`: token, quoted string, or RFC 2231. */
export function contentDisposition(name: string): string {
  if (/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) return `inline; filename=${name}`;
  if (/^[\x20-\x7e]*$/.test(name)) return `inline; filename="${name.replace(/(["\\])/g, "\\$1")}"`;
  return `inline; filename*=utf-8''${encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`;
}
