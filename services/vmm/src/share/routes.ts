import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import type { Logger } from "@dnah/platform";
import type { FastifyInstance, FastifyReply } from "fastify";
import { pack as tarPack } from "tar-stream";
import { InvalidArgumentError } from "../domain/errors.js";
import { BatchWriter, receive } from "./batch-writer.js";
import {
  commitIn,
  createTempIn,
  discardIn,
  openFileIn,
  openParent,
  SharePathError,
  shareSegments,
} from "./beneath.js";
import { ShareError } from "./errors.js";
import { type UploadOptions, uploadOptions } from "./options.js";
import { ShareQuota } from "./quota.js";
import { parseRange } from "./range.js";
import { extractTar, packFolder } from "./tar.js";
import { UPLOAD_TTL_MS, UploadStore, uploadsDirOf } from "./uploads.js";

export interface ShareRoutesOptions {
  /** The host folder of a sandbox's share, or undefined when this vmm has no such sandbox. */
  shareDirOf(sandboxId: string): string | undefined;
  /** Largest file one upload may write (and largest sum of files one tar may hold). */
  maxUploadBytes: number;
  /** Largest share: an upload that would take it past this is refused (507). */
  quotaBytes: number;
  /** Sandboxes on this host, for the sweep of expired chunked uploads (none: no sweep). */
  sandboxIds?: () => Iterable<string>;
  logger: Logger;
}

/** How often expired chunked uploads are looked for. */
const SWEEP_INTERVAL_MS = 3600_000;
/** Read size of share files: big reads keep a 1 GiB transfer to few syscalls and callbacks. */
const READ_HWM = 1024 * 1024;
type Query = Record<string, string | undefined>;

/** One JSON error on a share route: `{code, message}` as every dnah service answers. */
function fail(reply: FastifyReply, status: number, code: string, message: string) {
  return reply.code(status).type("application/json").send({ code, message });
}

/** Maps what a share operation threw to a status; never a stack trace. */
function sendError(reply: FastifyReply, err: unknown, logger: Logger, fields: Record<string, unknown>) {
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy();
    return reply;
  }
  if (err instanceof ShareError) return fail(reply, err.status, err.code, err.message);
  if (err instanceof SharePathError) return fail(reply, 403, "permission_denied", err.message);
  if (err instanceof InvalidArgumentError) return fail(reply, 400, "invalid_argument", err.message);
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return fail(reply, 404, "not_found", "no such file in the share");
  if (code === "EISDIR") return fail(reply, 400, "invalid_argument", "the path is a folder");
  if (code === "ENOTDIR") return fail(reply, 400, "invalid_argument", "a part of the path is not a folder");
  if (code === "ENOTEMPTY" || code === "EEXIST")
    return fail(reply, 409, "failed_precondition", "a folder is in the way at the path");
  if (code === "ENOSPC" || code === "EDQUOT")
    return fail(reply, 507, "resource_exhausted", "the host's disk is full");
  logger.warn({ ...fields, err }, "share request failed");
  return fail(reply, 500, "internal", "share request failed");
}

/**
 * The files plane's bytes on the vmm: `GET|PUT /share/<sandbox id>/<path>` stream between the
 * HTTP connection and the sandbox's share folder on this host, with no framing and no
 * buffering of whole files. It works whatever the sandbox's state (the folder is the host's;
 * a paused guest sees the change on resume). Paths cannot leave the share: every component is
 * opened without following links (`beneath.ts`). Uploads land in a temporary file renamed
 * into place only once complete (and its checksum matches, when one was given), so no partial
 * file is ever visible; they are owned by the sandbox user.
 *
 * Internal, like the rest of the vmm's API (127.0.0.1; the gateway authenticates callers).
 */
export async function shareRoutes(app: FastifyInstance, opts: ShareRoutesOptions): Promise<void> {
  await app.register(async (share) => {
    // Bodies stay streams: the PUT handler reads req.raw itself.
    share.removeAllContentTypeParsers();
    share.addContentTypeParser("*", (_req, _payload, done) => done(null, undefined));

    const quota = new ShareQuota(opts.quotaBytes);
    const uploads = new UploadStore(opts.maxUploadBytes, quota, UPLOAD_TTL_MS);
    const sweep = async () => {
      if (opts.sandboxIds === undefined) return;
      const roots = [...opts.sandboxIds()].flatMap((id) => opts.shareDirOf(id) ?? []);
      const removed = await uploads.sweep(roots);
      if (removed > 0) opts.logger.info({ count: removed }, "expired share uploads removed");
    };
    const sweepFailed = (err: Error) => opts.logger.warn({ err: err.message }, "share upload sweep failed");
    sweep().catch(sweepFailed);
    const sweeper = setInterval(() => sweep().catch(sweepFailed), SWEEP_INTERVAL_MS);
    sweeper.unref();
    share.addHook("onClose", async () => clearInterval(sweeper));
    // A body refused part way (quota, bad chunk, bad tar) is read to its end and dropped, so
    // the connection can carry the next request.
    share.addHook("onResponse", async (req) => {
      if (!req.raw.readableEnded && !req.raw.destroyed) req.raw.resume();
    });

    /** The sandbox's share folder, or a 404 sent. */
    const rootOf = (id: string, reply: FastifyReply) => {
      const root = opts.shareDirOf(id);
      if (root === undefined) fail(reply, 404, "not_found", `no sandbox '${id}' on this host`);
      return root;
    };

    share.get<{ Params: { id: string; "*": string }; Querystring: Query }>(
      "/share/:id/*",
      async (req, reply) => {
        const fields = { "sandbox.id": req.params.id, path: req.params["*"] };
        const root = rootOf(req.params.id, reply);
        if (root === undefined) return reply;
        if (req.query.uploadId !== undefined) {
          try {
            const m = await uploads.get(root, req.query.uploadId, req.params["*"]);
            return reply.send({
              uploadId: m.uploadId,
              path: m.path,
              size: m.size ?? null,
              received: m.received,
              expiresAt: new Date(m.expiresAt).toISOString(),
            });
          } catch (err) {
            return sendError(reply, err, opts.logger, fields);
          }
        }
        if (req.query.format !== undefined) {
          if (req.query.format !== "tar") return fail(reply, 400, "invalid_argument", "format must be 'tar'");
          return sendTar(root, req.params["*"], reply, opts.logger, fields);
        }
        let dir: FileHandle | undefined;
        let fh: FileHandle | undefined;
        try {
          const segs = shareSegments(req.params["*"]);
          dir = await openParent(root, segs, false);
          fh = await openFileIn(dir, segs.at(-1)!);
          const st = await fh.stat();
          if (st.isDirectory()) return fail(reply, 400, "invalid_argument", "the path is a folder");
          if (!st.isFile()) return fail(reply, 403, "permission_denied", "not a plain file");
          if (req.query.sha256 !== undefined) {
            const h = createHash("sha256");
            const file = fh;
            fh = undefined; // the stream closes it
            await pipeline(file.createReadStream({ highWaterMark: READ_HWM }), h);
            return reply.send({ sizeBytes: st.size, sha256: h.digest("hex") });
          }
          const range = parseRange(req.headers.range, st.size);
          if (range === "unsatisfiable") {
            reply.header("content-range", `bytes */${st.size}`);
            return fail(reply, 416, "out_of_range", `range outside the file's ${st.size} bytes`);
          }
          reply.header("accept-ranges", "bytes");
          reply.header("last-modified", st.mtime.toUTCString());
          reply.type("application/octet-stream");
          const file = fh;
          fh = undefined; // the stream closes it
          if (range === undefined) {
            reply.header("content-length", st.size);
            return reply.send(file.createReadStream({ highWaterMark: READ_HWM }));
          }
          reply.code(206);
          reply.header("content-range", `bytes ${range.start}-${range.end}/${st.size}`);
          reply.header("content-length", range.end - range.start + 1);
          return reply.send(
            file.createReadStream({ start: range.start, end: range.end, highWaterMark: READ_HWM }),
          );
        } catch (err) {
          return sendError(reply, err, opts.logger, fields);
        } finally {
          await fh?.close();
          await dir?.close();
        }
      },
    );

    share.put<{ Params: { id: string; "*": string }; Querystring: Query }>(
      "/share/:id/*",
      async (req, reply) => {
        const fields = { "sandbox.id": req.params.id, path: req.params["*"] };
        const root = rootOf(req.params.id, reply);
        if (root === undefined) return reply;
        const declared =
          req.headers["content-length"] === undefined ? undefined : Number(req.headers["content-length"]);
        if (req.query.uploadId !== undefined) {
          try {
            const m = await uploads.writeChunk(
              root,
              req.query.uploadId,
              req.params["*"],
              req.headers["content-range"],
              // Not destroyed when a chunk is refused part way: the refusal is still answered.
              req.raw.iterator({ destroyOnReturn: false }),
            );
            return reply.send({ uploadId: m.uploadId, size: m.size, received: m.received });
          } catch (err) {
            if (req.raw.readableAborted) {
              opts.logger.info(fields, "share chunk aborted by the client; not recorded");
              return reply;
            }
            return sendError(reply, err, opts.logger, fields);
          }
        }
        if (req.query.format !== undefined) {
          if (req.query.format !== "tar") return fail(reply, 400, "invalid_argument", "format must be 'tar'");
          const started = performance.now();
          try {
            if (declared !== undefined) await quota.check(root, 0);
            const budget = await quota.budget(root);
            const r = await extractTar(
              req.raw.iterator({ destroyOnReturn: false }),
              root,
              req.params["*"],
              uploadsDirOf(root),
              {
                maxBytes: opts.maxUploadBytes,
                take: budget.take,
              },
            );
            if (req.raw.readableAborted)
              throw Object.assign(new Error("aborted"), { code: "ERR_STREAM_PREMATURE_CLOSE" });
            quota.changed(root);
            opts.logger.info(
              {
                ...fields,
                entries: r.entries,
                sizeBytes: r.bytes,
                durationMs: Math.round(performance.now() - started),
              },
              "share tar extracted",
            );
            return reply.send({
              path: `/${req.params["*"]
                .split("/")
                .filter((x) => x !== "")
                .join("/")}`,
              ...r,
            });
          } catch (err) {
            if (
              (err as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE" ||
              req.raw.readableAborted
            ) {
              opts.logger.info(fields, "share tar upload aborted by the client; nothing was written");
              return reply;
            }
            return sendError(reply, err, opts.logger, fields);
          }
        }
        if (declared !== undefined && declared > opts.maxUploadBytes)
          return fail(reply, 413, "resource_exhausted", `a file may be at most ${opts.maxUploadBytes} bytes`);
        let o: UploadOptions;
        try {
          o = uploadOptions(req.query, req.headers);
        } catch (err) {
          return sendError(reply, err, opts.logger, fields);
        }
        let dir: FileHandle | undefined;
        let tmp: string | undefined;
        const started = performance.now();
        try {
          const segs = shareSegments(req.params["*"]);
          const name = segs.at(-1)!;
          if (declared !== undefined) await quota.check(root, declared);
          const budget = await quota.budget(root);
          dir = await openParent(root, segs, true);
          const t = await createTempIn(dir, name);
          tmp = t.tmp;
          // Hashing only when asked: it costs about as much CPU as the copy itself.
          const h = o.digest ? createHash("sha256") : undefined;
          let size = 0;
          try {
            size = await receive(
              req.raw,
              new BatchWriter(t.fh),
              opts.maxUploadBytes,
              (n) => budget.take(n),
              h,
            );
            // Page-cache semantics by default, like `cp`; the rename below still makes the file
            // appear whole or not at all.
            if (o.durable) await t.fh.sync();
          } finally {
            await t.fh.close();
          }
          const sha256 = h?.digest("hex");
          const want = o.want;
          if (want !== undefined && want !== sha256) {
            await discardIn(dir, tmp);
            tmp = undefined;
            return fail(
              reply,
              422,
              "data_loss",
              `the upload's sha256 is ${sha256}, not ${want}; nothing was written`,
            );
          }
          await commitIn(dir, tmp, name);
          tmp = undefined;
          quota.changed(root);
          if (o.durable) await dir.sync();
          const ms = performance.now() - started;
          opts.logger.info(
            {
              ...fields,
              sizeBytes: size,
              durationMs: Math.round(ms),
              mbPerS: Math.round(size / 1048.576 / Math.max(ms, 1)),
              durable: o.durable,
            },
            "share upload written",
          );
          return reply.send({
            path: `/${segs.join("/")}`,
            sizeBytes: size,
            ...(sha256 !== undefined ? { sha256 } : {}),
          });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "DNAH_TOO_LARGE")
            return fail(
              reply,
              413,
              "resource_exhausted",
              `a file may be at most ${opts.maxUploadBytes} bytes; nothing was written`,
            );
          if (
            (err as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE" ||
            req.raw.readableAborted
          ) {
            opts.logger.info(fields, "share upload aborted by the client; nothing was written");
            return reply;
          }
          return sendError(reply, err, opts.logger, fields);
        } finally {
          if (dir !== undefined && tmp !== undefined) await discardIn(dir, tmp);
          await dir?.close();
        }
      },
    );

    share.post<{ Params: { id: string; "*": string }; Querystring: Query }>(
      "/share/:id/*",
      async (req, reply) => {
        const fields = { "sandbox.id": req.params.id, path: req.params["*"] };
        const root = rootOf(req.params.id, reply);
        if (root === undefined) return reply;
        try {
          if (req.query.uploads !== undefined) {
            const sizeHeader = req.headers["x-dnah-size"];
            let size: number | undefined;
            if (sizeHeader !== undefined) {
              if (typeof sizeHeader !== "string" || !/^\d{1,16}$/.test(sizeHeader))
                throw new InvalidArgumentError("x-dnah-size must be a byte count");
              size = Number(sizeHeader);
            }
            const want = req.headers["x-dnah-sha256"];
            if (want !== undefined && typeof want !== "string")
              throw new InvalidArgumentError("x-dnah-sha256 must be 64 lower-case hex digits");
            const m = await uploads.create(root, req.params["*"], size, want);
            opts.logger.info(
              { ...fields, uploadId: m.uploadId, sizeBytes: size },
              "share chunked upload started",
            );
            return reply.code(201).send({
              uploadId: m.uploadId,
              path: m.path,
              size: m.size ?? null,
              expiresAt: new Date(m.expiresAt).toISOString(),
            });
          }
          if (req.query.uploadId !== undefined && req.query.complete !== undefined) {
            const o = uploadOptions(req.query, req.headers);
            if (o.want !== undefined)
              throw new InvalidArgumentError("a chunked upload's x-dnah-sha256 goes with '?uploads'");
            const r = await uploads.complete(root, req.query.uploadId, req.params["*"], o);
            opts.logger.info(
              { ...fields, uploadId: req.query.uploadId, sizeBytes: r.sizeBytes },
              "share chunked upload written",
            );
            return reply.send(r);
          }
          return fail(
            reply,
            400,
            "invalid_argument",
            "POST takes '?uploads' (start a chunked upload) or '?uploadId=<id>&complete'",
          );
        } catch (err) {
          return sendError(reply, err, opts.logger, fields);
        }
      },
    );

    share.delete<{ Params: { id: string; "*": string }; Querystring: Query }>(
      "/share/:id/*",
      async (req, reply) => {
        const fields = { "sandbox.id": req.params.id, path: req.params["*"] };
        const root = rootOf(req.params.id, reply);
        if (root === undefined) return reply;
        if (req.query.uploadId === undefined)
          return fail(
            reply,
            400,
            "invalid_argument",
            "DELETE takes '?uploadId=<id>' (abort a chunked upload)",
          );
        try {
          await uploads.abort(root, req.query.uploadId, req.params["*"]);
          return reply.code(204).send();
        } catch (err) {
          return sendError(reply, err, opts.logger, fields);
        }
      },
    );
  });
}

/** `GET ?format=tar`: the folder as a tar stream (`tar.ts`), or the share itself for an empty path. */
async function sendTar(
  root: string,
  rel: string,
  reply: FastifyReply,
  logger: Logger,
  fields: Record<string, unknown>,
) {
  let dir: FileHandle | undefined;
  try {
    const segs = rel.split("/").some((s) => s !== "") ? shareSegments(rel) : [];
    // Every component opened as a folder, links refused (the last name is a placeholder).
    dir = await openParent(root, [...segs, "-"], false);
  } catch (err) {
    await dir?.close();
    return sendError(reply, err, logger, fields);
  }
  const pack = tarPack();
  const folder = dir;
  packFolder(folder, pack)
    .then(() => pack.finalize())
    .catch((err: Error) => {
      logger.warn({ ...fields, err: err.message }, "share tar stream failed");
      pack.destroy(err);
    })
    .finally(() => folder.close());
  reply.type("application/x-tar");
  return reply.send(pack);
}
