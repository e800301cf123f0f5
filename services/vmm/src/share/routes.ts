import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import type { Logger } from "@dnah/platform";
import type { FastifyInstance, FastifyReply } from "fastify";
import { InvalidArgumentError } from "../domain/errors.js";
import {
  commitIn,
  createTempIn,
  discardIn,
  openFileIn,
  openParent,
  SharePathError,
  shareSegments,
} from "./beneath.js";
import { parseRange } from "./range.js";

export interface ShareRoutesOptions {
  /** The host folder of a sandbox's share, or undefined when this vmm has no such sandbox. */
  shareDirOf(sandboxId: string): string | undefined;
  /** Largest file one upload may write. */
  maxUploadBytes: number;
  logger: Logger;
}

const SHA256_RE = /^[0-9a-f]{64}$/;

/** One JSON error on a share route: `{code, message}` as every dnah service answers. */
function fail(reply: FastifyReply, status: number, code: string, message: string) {
  return reply.code(status).type("application/json").send({ code, message });
}

/** Maps what a share operation threw to a status; never a stack trace. */
function sendError(reply: FastifyReply, err: unknown, logger: Logger, fields: Record<string, unknown>) {
  if (err instanceof SharePathError) return fail(reply, 403, "permission_denied", err.message);
  if (err instanceof InvalidArgumentError) return fail(reply, 400, "invalid_argument", err.message);
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return fail(reply, 404, "not_found", "no such file in the share");
  if (code === "EISDIR") return fail(reply, 400, "invalid_argument", "the path is a folder");
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

    share.get<{ Params: { id: string; "*": string }; Querystring: { sha256?: string } }>(
      "/share/:id/*",
      async (req, reply) => {
        const fields = { "sandbox.id": req.params.id, path: req.params["*"] };
        const root = opts.shareDirOf(req.params.id);
        if (root === undefined)
          return fail(reply, 404, "not_found", `no sandbox '${req.params.id}' on this host`);
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
            await pipeline(file.createReadStream(), h);
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
            return reply.send(file.createReadStream());
          }
          reply.code(206);
          reply.header("content-range", `bytes ${range.start}-${range.end}/${st.size}`);
          reply.header("content-length", range.end - range.start + 1);
          return reply.send(file.createReadStream({ start: range.start, end: range.end }));
        } catch (err) {
          return sendError(reply, err, opts.logger, fields);
        } finally {
          await fh?.close();
          await dir?.close();
        }
      },
    );

    share.put<{ Params: { id: string; "*": string } }>("/share/:id/*", async (req, reply) => {
      const fields = { "sandbox.id": req.params.id, path: req.params["*"] };
      const root = opts.shareDirOf(req.params.id);
      if (root === undefined)
        return fail(reply, 404, "not_found", `no sandbox '${req.params.id}' on this host`);
      const declared =
        req.headers["content-length"] === undefined ? undefined : Number(req.headers["content-length"]);
      if (declared !== undefined && declared > opts.maxUploadBytes)
        return fail(reply, 413, "resource_exhausted", `a file may be at most ${opts.maxUploadBytes} bytes`);
      const want = req.headers["x-dnah-sha256"];
      if (want !== undefined && (typeof want !== "string" || !SHA256_RE.test(want)))
        return fail(reply, 400, "invalid_argument", "x-dnah-sha256 must be 64 lower-case hex digits");
      let dir: FileHandle | undefined;
      let tmp: string | undefined;
      const started = performance.now();
      try {
        const segs = shareSegments(req.params["*"]);
        const name = segs.at(-1)!;
        dir = await openParent(root, segs, true);
        const t = await createTempIn(dir, name);
        tmp = t.tmp;
        const h = createHash("sha256");
        let size = 0;
        try {
          // One chunk at a time: memory stays at a chunk, and the socket waits while the disk does.
          for await (const chunk of req.raw as AsyncIterable<Buffer>) {
            size += chunk.length;
            if (size > opts.maxUploadBytes)
              throw Object.assign(new Error("too large"), { code: "DNAH_TOO_LARGE" });
            h.update(chunk);
            await t.fh.write(chunk);
          }
          if (req.raw.readableAborted)
            throw Object.assign(new Error("aborted"), { code: "ERR_STREAM_PREMATURE_CLOSE" });
          await t.fh.sync();
        } finally {
          await t.fh.close();
        }
        const sha256 = h.digest("hex");
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
        await dir.sync();
        const ms = performance.now() - started;
        opts.logger.info(
          {
            ...fields,
            sizeBytes: size,
            durationMs: Math.round(ms),
            mbPerS: Math.round(size / 1048.576 / Math.max(ms, 1)),
          },
          "share upload written",
        );
        return reply.send({ path: `/${segs.join("/")}`, sizeBytes: size, sha256 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "DNAH_TOO_LARGE")
          return fail(
            reply,
            413,
            "resource_exhausted",
            `a file may be at most ${opts.maxUploadBytes} bytes; nothing was written`,
          );
        if ((err as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE" || req.raw.destroyed) {
          opts.logger.info(fields, "share upload aborted by the client; nothing was written");
          return reply;
        }
        return sendError(reply, err, opts.logger, fields);
      } finally {
        if (dir !== undefined && tmp !== undefined) await discardIn(dir, tmp);
        await dir?.close();
      }
    });
  });
}
