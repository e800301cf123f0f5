import { Readable } from "node:stream";
import type { FastifyPluginAsync } from "fastify";
import { InvalidArgumentError, PayloadTooLargeError } from "../../../errors.js";
import {
  readShareFile,
  type ShareHost,
  shareHost,
  shareRelative,
  writeShareFile,
} from "../../../sandbox/share-client.js";
import type { ToolboxContext } from "./context.js";
import { toFileInfo } from "./file-info.js";
import { fsError, SandboxFs } from "./fs-agent.js";
import { body, sandboxPath, strArray } from "./validate.js";

type P = { Params: { sandboxId: string } };

/** Daytona's daemon answers bulk downloads with this fixed boundary. */
const BOUNDARY = "DAYTONA-FILE-BOUNDARY";
const MAX_FILES = 1000;
const FIELD_RE = /^files\[(\d{1,4})\]\.(path|file)$/;

/**
 * `POST /files/bulk-upload` (multipart: `files[i].path` then `files[i].file`) and
 * `POST /files/bulk-download` (JSON `{paths}` → multipart with one part per path, `error` parts
 * for the ones that failed, every part's filename the path exactly as requested).
 */
export const transferRoutes: FastifyPluginAsync<ToolboxContext> = async (app, ctx) => {
  app.post<P>("/:sandboxId/files/bulk-upload", async (req) => {
    if (!req.isMultipart()) throw new InvalidArgumentError("send multipart/form-data");
    const id = req.params.sandboxId;
    // Files below /mnt/dnah-share stream to the share plane; the agent is reached for the others.
    let conn: Awaited<ReturnType<typeof ctx.deps.agents.connect>> | undefined;
    let share: Promise<ShareHost> | undefined;
    const paths = new Map<string, string>();
    const done: { path: string; bytes: number }[] = [];
    for await (const part of wellFormed(req.parts())) {
      const m = FIELD_RE.exec(part.fieldname);
      if (m === null) {
        if (part.type === "file") await part.toBuffer().catch(malformed); // drain what we do not use
        continue;
      }
      const index = m[1] ?? "";
      if (part.type === "field") {
        if (m[2] === "path" && typeof part.value === "string") paths.set(index, part.value);
        continue;
      }
      // The SDK sends the path field first and repeats the path as the part's filename.
      const requested = paths.get(index) ?? part.filename;
      if (done.length >= MAX_FILES) throw new InvalidArgumentError(`at most ${MAX_FILES} files per upload`);
      const path = sandboxPath(requested, `files[${index}].path`);
      const rel = shareRelative(path);
      if (rel !== undefined) {
        share ??= shareHost(ctx.deps, id);
        // Past the upload limit the part ends early: fail the upload rather than keep a short file.
        const file = part.file;
        file.once("limit", () =>
          file.destroy(new PayloadTooLargeError("file is larger than the upload limit")),
        );
        const written = await writeShareFile(await share, rel, file).catch((err: unknown) => {
          throw fsError(ctx, id, path, err);
        });
        done.push({ path, bytes: written.sizeBytes });
        continue;
      }
      const data = await part.toBuffer().catch(malformed);
      try {
        conn ??= await ctx.deps.agents.connect(id);
        await conn.postFile(path, data);
      } catch (err) {
        throw fsError(ctx, id, path, err);
      }
      done.push({ path, bytes: data.length });
    }
    if (done.length === 0) throw new InvalidArgumentError("no files[i].file part in the upload");
    return { files: done };
  });

  app.post<P>("/:sandboxId/files/bulk-download", async (req, reply) => {
    const paths = strArray(body(req.body), "paths", { required: true, max: MAX_FILES });
    for (const p of paths)
      if (/[\r\n]/.test(p)) throw new InvalidArgumentError("paths must not contain line breaks");
    const id = req.params.sandboxId;
    const fs = new SandboxFs(ctx, id);
    let conn: Awaited<ReturnType<typeof ctx.deps.agents.connect>> | undefined;
    let share: Promise<ShareHost> | undefined;
    const signal = new AbortController();
    reply.raw.once("close", () => signal.abort());
    async function* parts(): AsyncGenerator<Buffer> {
      for (const requested of paths) {
        let failure: { statusCode: number; code: string; message: string } | undefined;
        try {
          const path = sandboxPath(requested, "paths[]");
          const rel = shareRelative(path);
          if (rel !== undefined) {
            share ??= shareHost(ctx.deps, id);
            const res = await readShareFile(await share, rel, signal.signal).catch((err: unknown) => {
              throw fsError(ctx, id, path, err);
            });
            yield head("file", requested, "application/octet-stream", Number(res.headers["content-length"]));
            for await (const chunk of res as AsyncIterable<Buffer>) yield chunk;
            yield Buffer.from("\r\n");
            continue;
          }
          const info = toFileInfo(await fs.stat(path));
          if (info.isDir) {
            failure = {
              statusCode: 400,
              code: "INVALID_FILE_PATH",
              message: `'${requested}' is a directory`,
            };
          } else {
            conn ??= await ctx.deps.agents.connect(id);
            const res = await conn.getFile(path, signal.signal).catch((err: unknown) => {
              throw fsError(ctx, id, path, err);
            });
            yield head("file", requested, "application/octet-stream", info.size);
            for await (const chunk of res as AsyncIterable<Buffer>) yield chunk;
            yield Buffer.from("\r\n");
            continue;
          }
        } catch (err) {
          failure = partError(requested, err);
          if (failure === undefined) throw err;
        }
        const json = Buffer.from(JSON.stringify({ ...failure, source: "DAYTONA_DAEMON" }));
        yield head("error", requested, "application/json", json.length);
        yield json;
        yield Buffer.from("\r\n");
      }
      yield Buffer.from(`--${BOUNDARY}--\r\n`);
    }
    const stream = Readable.from(parts());
    stream.on("error", (err) => ctx.logger.warn({ err, "sandbox.id": id }, "bulk download cut short"));
    return reply.type(`multipart/form-data; boundary=${BOUNDARY}`).send(stream);
  });
};

function head(name: string, filename: string, type: string, size: number): Buffer {
  const quoted = filename.replaceAll("\\", "\\\\").replaceAll('"', '\\"');
  return Buffer.from(
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"; filename="${quoted}"\r\n` +
      `Content-Type: ${type}\r\nContent-Length: ${size}\r\n\r\n`,
  );
}

/** The body of an `error` part, for failures that concern one path; undefined for the rest. */
function partError(
  requested: string,
  err: unknown,
): { statusCode: number; code: string; message: string } | undefined {
  if (err instanceof Error && "status" in err && "code" in err && typeof err.code === "string") {
    const status = Number(err.status);
    if (status === 404 || status === 403 || status === 400)
      return { statusCode: status, code: err.code, message: err.message };
  }
  if (err instanceof InvalidArgumentError)
    return { statusCode: 400, code: "INVALID_FILE_PATH", message: `${requested}: ${err.message}` };
  return undefined;
}

/** Rethrows a multipart parse error as the caller's (limits keep their own 4xx). */
function malformed(err: unknown): never {
  const status = (err as { statusCode?: unknown }).statusCode;
  if (typeof status === "number" && status >= 400 && status < 500) throw err;
  throw new InvalidArgumentError(`malformed multipart body: ${(err as Error).message}`, { cause: err });
}

/**
 * The parts of a multipart body, where a body that does not parse (busboy's "Unexpected end of
 * form", "Malformed part header", …) is the caller's mistake, not a 500. Errors that already
 * carry a 4xx status (the multipart limits) keep it.
 */
async function* wellFormed<T>(parts: AsyncIterable<T>): AsyncGenerator<T> {
  const it = parts[Symbol.asyncIterator]();
  for (;;) {
    let next: IteratorResult<T>;
    try {
      next = await it.next();
    } catch (err) {
      malformed(err);
    }
    if (next.done === true) return;
    yield next.value;
  }
}
