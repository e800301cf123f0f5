import { constants as fsc, type Stats } from "node:fs";
import { chown, open, stat, truncate, unlink } from "node:fs/promises";
import { constants as osc } from "node:os";
import { basename, dirname } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import busboy from "busboy";
import type { AgentContext } from "../context.js";
import { errnoOf, fsError, GuestError } from "../errors.js";
import { ensureDirs, type Owner, ownerOf } from "../filesystem/ensure-dirs.js";
import {
  type Metadata,
  MetadataWriteError,
  metadataFromHeaders,
  metadataProblem,
} from "../filesystem/metadata.js";
import { resolvePath } from "../paths.js";
import type { User } from "../users.js";
import { requestEncoding } from "./encoding.js";
import { authorizeFileRequest } from "./file-access.js";
import { HttpError, type HttpRequest, type HttpResponse, sendJson } from "./respond.js";

const { ENOSPC, EDQUOT } = osc.errno;

interface UploadedEntry {
  path: string;
  name: string;
  type: "file";
  metadata?: Metadata;
}

/** What every file of one upload gets: where parents and ownership come from, and metadata. */
interface UploadTarget {
  ctx: AgentContext;
  owner: Owner;
  metadata: Metadata;
}

/**
 * `POST /files`: multipart (field `file`, filename = destination path unless `?path=` is given)
 * or a raw `application/octet-stream` body (`?path=` required), optionally gzip-encoded.
 * Streams to disk; parents are created and everything is owned by the user. 200 with
 * `[{path, name, type: "file"}]`; 507 when the disk is full.
 */
export async function postFiles(
  ctx: AgentContext,
  req: HttpRequest,
  res: HttpResponse,
  url: URL,
): Promise<void> {
  // On any failure the router answers and drops the unread rest of the body.
  const { user, path: pathParam } = await authorizeFileRequest(ctx, req, url, "write");
  const metadata = metadataFromHeaders(req.headers);
  const problem = metadataProblem(metadata);
  if (problem) throw new HttpError(400, `invalid metadata: ${problem}`);
  const encoding = requestEncoding(req.headers["content-encoding"]);
  const body: Readable = encoding === "gzip" ? req.pipe(createGunzip()) : req;
  if (encoding === "gzip") req.on("error", (err) => body.destroy(err));
  // Errors may come before a consumer is attached (it waits for directories first); the
  // consumer's pipeline still sees them through the stream's errored state.
  body.on("error", () => {});
  const contentType = req.headers["content-type"] ?? "";
  const mediaType = contentType.split(";")[0]?.trim().toLowerCase() ?? "";
  const target: UploadTarget = { ctx, owner: ownerOf(user, ctx.users.privileged), metadata };
  let entries: UploadedEntry[];
  if (mediaType === "application/octet-stream") {
    if (pathParam === null) throw new HttpError(400, "path query parameter is required for raw body upload");
    const path = resolvePath(pathParam, user, ctx.state.defaultWorkdir);
    entries = [await writeUpload(body, path, target)];
  } else if (mediaType.startsWith("multipart/")) {
    entries = await multipartUpload(req, body, user, target, pathParam);
  } else {
    throw new HttpError(
      400,
      `unsupported content type: ${contentType}, expected multipart/form-data or application/octet-stream`,
    );
  }
  sendJson(res, 200, entries);
}

function multipartUpload(
  req: HttpRequest,
  body: Readable,
  user: User,
  target: UploadTarget,
  pathParam: string | null,
): Promise<UploadedEntry[]> {
  const { ctx } = target;
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: { ...req.headers, "content-type": req.headers["content-type"] ?? "" },
        preservePath: true,
        limits: { fieldSize: 1024 * 1024, fields: 1000, parts: 100_000, headerPairs: 200 },
      });
    } catch (err) {
      reject(
        new HttpError(
          400,
          `error parsing multipart form: ${err instanceof Error ? err.message : String(err)}`,
        ),
      );
      return;
    }
    const entries: UploadedEntry[] = [];
    let chain = Promise.resolve();
    let failed = false;
    const fail = (err: unknown): void => {
      if (failed) return;
      failed = true;
      body.unpipe(parser);
      reject(err);
    };
    parser.on("file", (field, stream, info) => {
      stream.on("error", () => {}); // surfaces through the pipeline below, or through `fail`
      if (failed || field !== "file") {
        stream.resume();
        return;
      }
      chain = chain.then(async () => {
        if (failed) {
          stream.resume();
          return;
        }
        try {
          const path = resolvePath(pathParam ?? info.filename ?? "", user, ctx.state.defaultWorkdir);
          if (entries.some((e) => e.path === path)) {
            throw new HttpError(
              400,
              `you cannot upload multiple files to the same path '${path}' in one upload request, only the first specified file was uploaded`,
            );
          }
          entries.push(await writeUpload(stream, path, target));
        } catch (err) {
          stream.resume();
          fail(err);
        }
      });
    });
    parser.on("error", (err: Error) => fail(new HttpError(400, `error reading form: ${err.message}`)));
    parser.on("close", () => {
      chain.then(() => {
        if (!failed) resolve(entries);
      }, fail);
    });
    body.on("error", (err) => fail(new HttpError(400, `error reading request body: ${err.message}`)));
    body.pipe(parser);
  });
}

/**
 * envd's processFile: parents, truncate, owned by the user, 507 on ENOSPC; then the upload's
 * metadata replaces the file's (an upload without metadata clears what an earlier one left).
 */
async function writeUpload(source: Readable, path: string, target: UploadTarget): Promise<UploadedEntry> {
  const { owner } = target;
  await ensureDirs(dirname(path), owner);
  let existing: Stats | undefined;
  try {
    existing = await stat(path);
  } catch (err) {
    if (errnoOf(err) !== "ENOENT") throw fsError(err, "error getting file info");
  }
  if (existing?.isDirectory()) throw new HttpError(400, `path is a directory: ${path}`);
  const handle = await open(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC, 0o666).catch((err: unknown) => {
    throw uploadError(err, "error opening file");
  });
  if (owner.chown) {
    try {
      await chown(path, owner.uid, owner.gid);
    } catch (err) {
      await handle.close();
      throw fsError(err, "error changing file ownership");
    }
  }
  // The write stream owns the handle from here on and closes it, also on failure. `flush`:
  // on disk (fsync) before it counts as written. On a thin-provisioned disk (a jail's sparse
  // layer when its host is full) every write lands in the page cache and only the sync
  // reports ENOSPC; without it the caller is told 200 and the bytes vanish later.
  await pipeline(source, handle.createWriteStream({ flush: true })).catch(async (err: unknown) => {
    // Not all of it landed: a new file goes, an old one (already truncated) is left empty, so
    // no partial file passes for the upload.
    await (existing === undefined ? unlink(path) : truncate(path, 0)).catch((cleanupErr: unknown) =>
      target.ctx.log.warn("partial upload not removed", { path, error: String(cleanupErr) }),
    );
    throw uploadError(err, "error writing file");
  });
  const { ctx, metadata } = target;
  try {
    await ctx.metadata.replace(path, metadata);
  } catch (err) {
    if (!(err instanceof MetadataWriteError)) throw err;
    if (err.unsupported) {
      ctx.log.warn("filesystem does not support xattrs; metadata not persisted", {
        path,
        error: err.message,
      });
    } else if (err.errno === ENOSPC || err.errno === EDQUOT) {
      throw new GuestError("no_space", `not enough space for file metadata: ${err.message}`, { cause: err });
    } else {
      throw new GuestError("internal", `error writing file metadata: ${err.message}`, { cause: err });
    }
  }
  const entry: UploadedEntry = { path, name: basename(path), type: "file" };
  const [persisted] = await ctx.metadata.read([path]);
  if (persisted && Object.keys(persisted).length > 0) entry.metadata = persisted;
  return entry;
}

function uploadError(err: unknown, what: string): Error {
  if (err instanceof GuestError || err instanceof HttpError) return err;
  const code = errnoOf(err);
  if (code === "ENOSPC" || code === "EDQUOT")
    return new GuestError("no_space", "not enough disk space available", { cause: err });
  if (code === "Z_DATA_ERROR" || code === "Z_BUF_ERROR") {
    return new HttpError(400, `error decompressing request body: ${(err as Error).message}`);
  }
  if (code === "ERR_STREAM_PREMATURE_CLOSE" || code === "ECONNRESET") {
    return new HttpError(400, `upload interrupted: ${(err as Error).message}`);
  }
  return fsError(err, what);
}
