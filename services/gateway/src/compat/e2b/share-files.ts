import { timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { posix } from "node:path";
import type { Readable } from "node:stream";
import type { Client } from "@connectrpc/connect";
import type { Logger } from "@dnah/platform";
import type { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import busboy from "busboy";
import { FileNotFoundError, InvalidArgumentError, toErrorResponse } from "../../errors.js";
import type { ActivitySink } from "../../sandbox/activity.js";
import { sendJson } from "../../sandbox/http-proxy.js";
import {
  readShareFile,
  type ShareHost,
  shareHost,
  shareRelative,
  writeShareFile,
} from "../../sandbox/share-client.js";
import type { AccessTokens } from "./access-token.js";
import { fileSignature } from "./signed-files.js";

export interface ShareFilesDeps {
  scheduler: Pick<Client<typeof SchedulerService>, "getSandbox">;
  vmmAuthorization: (vmmUrl: string) => string;
  tokens: AccessTokens;
  /** Whether the sandbox is one of the E2B surface's (the proxy serves no other). */
  admit: (sandboxId: string) => Promise<boolean>;
  activity: ActivitySink;
  logger: Logger;
}

/** An envd `/files` request for a file of the share, as the share plane can serve it. */
export interface ShareFileRequest {
  operation: "read" | "write";
  /** The absolute guest path, as requested. */
  path: string;
  /** Below /mnt/dnah-share. */
  rel: string;
}

const MAX_URL_CHARS = 16_384;

/**
 * Which envd `/files` requests the share plane answers instead of the agent (pure): `GET` or
 * `POST` with an absolute `path` below /mnt/dnah-share without `..`; reads without a Range,
 * writes as one raw or multipart body, not compressed, without file metadata (the agent keeps
 * those in extended attributes). Anything else goes to the agent as before.
 */
export function shareFileRequest(
  rawUrl: string,
  method: string,
  headers: IncomingMessage["headers"],
): ShareFileRequest | undefined {
  if (rawUrl.length > MAX_URL_CHARS) return undefined;
  const q = rawUrl.indexOf("?");
  if (q === -1 || rawUrl.slice(0, q) !== "/files") return undefined;
  const operation = method === "GET" ? "read" : method === "POST" ? "write" : undefined;
  if (operation === undefined) return undefined;
  const path = new URLSearchParams(rawUrl.slice(q + 1)).get("path");
  if (path === null || !path.startsWith("/") || path.includes("\0") || path.split("/").includes(".."))
    return undefined;
  const rel = shareRelative(posix.normalize(path).replace(/\/+$/, ""));
  if (rel === undefined || rel === "") return undefined;
  if (operation === "read") return headers.range === undefined ? { operation, path, rel } : undefined;
  const encoding = headers["content-encoding"];
  if (encoding !== undefined && encoding.toLowerCase() !== "identity") return undefined;
  if (Object.keys(headers).some((h) => h.startsWith("x-metadata-"))) return undefined;
  const media = (headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
  if (media !== "application/octet-stream" && media !== "multipart/form-data") return undefined;
  return { operation, path, rel };
}

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

/** envd's `/files` rule (the access token, else a valid unexpired signature), checked here. */
function authorized(req: IncomingMessage, r: ShareFileRequest, token: string): boolean {
  const header = req.headers["x-access-token"];
  if (typeof header === "string" && header !== "") return safeEqual(header, token);
  const qs = new URLSearchParams((req.url ?? "").slice((req.url ?? "").indexOf("?") + 1));
  const signature = qs.get("signature");
  if (signature === null) return false;
  const rawExp = qs.get("signature_expiration");
  const expiration = rawExp === null ? undefined : Number(rawExp);
  if (expiration !== undefined && (!Number.isSafeInteger(expiration) || expiration < Date.now() / 1000))
    return false;
  const want = fileSignature(
    {
      path: qs.get("path") ?? "",
      operation: r.operation,
      username: qs.get("username") ?? "",
      expiration: rawExp ?? undefined,
    },
    token,
  );
  return safeEqual(want, signature);
}

/**
 * Serves an envd `/files` read or write of a share file from the share plane (streamed, also
 * while the sandbox is paused), with envd's answers: the bytes (`Content-Disposition`,
 * `Content-Length`), or `[{path, name, type: "file"}]` for a write; errors as
 * `{code: <status>, message}`. Resolves false, having touched nothing, when the request is not
 * one the share serves, is not authorized here (the agent then answers it as before), or the
 * sandbox has no reachable share (not running or paused).
 */
export async function serveShareFile(
  deps: ShareFilesDeps,
  sandboxId: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<boolean> {
  const r = shareFileRequest(req.url ?? "", req.method ?? "", req.headers);
  if (r === undefined || !authorized(req, r, deps.tokens.tokenFor(sandboxId))) return false;
  let host: ShareHost;
  try {
    if (!(await deps.admit(sandboxId))) return false;
    host = await shareHost(deps, sandboxId);
  } catch {
    return false;
  }
  // Counted like the rest of the sandbox's traffic: active while the request is open.
  const release = deps.activity.hold(sandboxId);
  const abort = new AbortController();
  res.once("close", () => abort.abort(new Error("client went away")));
  try {
    if (r.operation === "read") {
      const file = await readShareFile(host, r.rel, abort.signal);
      const headers: Record<string, string> = {
        "content-type": "application/octet-stream",
        "content-disposition": contentDisposition(posix.basename(r.rel)),
        "content-length": file.headers["content-length"] ?? "0",
        vary: "Accept-Encoding",
      };
      const modified = file.headers["last-modified"];
      if (modified !== undefined) headers["last-modified"] = modified;
      res.writeHead(200, headers);
      file.on("error", (err) => res.destroy(err));
      file.pipe(res);
      await new Promise<void>((resolve) => res.once("close", resolve));
    } else {
      await writeBody(host, r, req, abort.signal);
      sendJson(res, 200, [{ path: r.path, name: posix.basename(r.rel), type: "file" }]);
    }
  } catch (err) {
    req.resume();
    const e = toErrorResponse(err, { logger: deps.logger, requestId: "" });
    const message = err instanceof FileNotFoundError ? `path '${r.path}' does not exist` : `${e.message}`;
    if (!res.headersSent) sendJson(res, e.httpStatus, { code: e.httpStatus, message });
    else res.destroy();
  } finally {
    release();
  }
  return true;
}

/** The request body (raw, or the multipart `file` part) streamed into the share file. */
async function writeBody(
  host: ShareHost,
  r: ShareFileRequest,
  req: IncomingMessage,
  signal: AbortSignal,
): Promise<void> {
  if ((req.headers["content-type"] ?? "").toLowerCase().startsWith("application/octet-stream")) {
    const length = Number(req.headers["content-length"]);
    await writeShareFile(host, r.rel, req, {
      signal,
      contentLength: Number.isSafeInteger(length) ? length : undefined,
    });
    return;
  }
  let parser: busboy.Busboy;
  try {
    parser = busboy({ headers: req.headers, limits: { files: 2, fields: 100, fieldSize: 64 * 1024 } });
  } catch (err) {
    throw new InvalidArgumentError(`error parsing multipart form: ${(err as Error).message}`);
  }
  await new Promise<void>((resolve, reject) => {
    let written: Promise<unknown> | undefined;
    let failed = false;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      req.unpipe(parser);
      reject(err);
    };
    parser.on("file", (field: string, stream: Readable) => {
      if (field !== "file" || failed) {
        stream.resume();
        return;
      }
      if (written !== undefined) {
        stream.resume();
        fail(
          new InvalidArgumentError(
            `you cannot upload multiple files to the same path '${r.path}' in one upload request, only the first specified file was uploaded`,
          ),
        );
        return;
      }
      written = writeShareFile(host, r.rel, stream, { signal });
      written.catch((err: unknown) => {
        stream.resume();
        fail(err);
      });
    });
    parser.on("error", (err: Error) => fail(new InvalidArgumentError(`error reading form: ${err.message}`)));
    parser.on("close", () => {
      if (written === undefined) fail(new InvalidArgumentError("no file part in the upload"));
      else written.then(() => resolve(), fail);
    });
    req.on("error", fail);
    req.pipe(parser);
  });
}

/** Go's `mime.FormatMediaType("inline", {filename})`, as envd sends it. */
function contentDisposition(name: string): string {
  if (/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) return `inline; filename=${name}`;
  if (/^[\x20-\x7e]*$/.test(name)) return `inline; filename="${name.replace(/(["\\])/g, "\\$1")}"`;
  return `inline; filename*=utf-8''${encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`;
}
