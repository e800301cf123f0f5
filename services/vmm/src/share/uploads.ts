import { createHash, randomBytes } from "node:crypto";
import { constants } from "node:fs";
import {
  type FileHandle,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { InvalidArgumentError } from "../domain/errors.js";
import { BatchWriter } from "./batch-writer.js";
import { commitIn, createTempIn, openParent, SHARE_GID, SHARE_UID, shareSegments } from "./beneath.js";
import { addRange, firstGap, parseContentRange, type Ranges } from "./chunks.js";
import { ShareError, tooLarge } from "./errors.js";
import type { ShareQuota } from "./quota.js";

/** A chunked upload not completed within this long is removed. */
export const UPLOAD_TTL_MS = 24 * 3600_000;
const UPLOAD_ID_RE = /^[0-9a-f]{32}$/;
const SHA256_RE = /^[0-9a-f]{64}$/;

/** What is kept beside an upload's bytes (`<uploadId>.json`), so a restarted vmm can resume it. */
export interface UploadMeta {
  uploadId: string;
  /** Share-relative target, with a leading '/'. */
  path: string;
  /** Bytes of the whole file: from `x-dnah-size`, or the first chunk's Content-Range total. */
  size: number | undefined;
  sha256: string | undefined;
  expiresAt: number;
  received: Ranges;
}

/**
 * The folder of a sandbox's unfinished uploads: `.uploads` beside its share folder, in the
 * sandbox's own state folder on the host (removed with it), never visible to the guest.
 */
export function uploadsDirOf(shareDir: string): string {
  return join(dirname(shareDir), ".uploads");
}

/**
 * Resumable, parallel chunked uploads into a sandbox's share. An upload is a sparse file
 * written positionally, chunk by chunk, in any order and in parallel, with the ranges
 * received so far persisted beside it; `complete` checks every byte is there (and the sha256
 * when one was given) and renames the file into place in one step, so the target path never
 * shows a partial file.
 */
export class UploadStore {
  /** Per upload, the tail of its metadata updates (chunks of one upload finish in any order). */
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(
    private readonly maxUploadBytes: number,
    private readonly quota: ShareQuota,
    private readonly ttlMs = UPLOAD_TTL_MS,
  ) {}

  async create(
    root: string,
    rel: string,
    size: number | undefined,
    sha256: string | undefined,
  ): Promise<UploadMeta> {
    const segs = shareSegments(rel);
    if (sha256 !== undefined && !SHA256_RE.test(sha256))
      throw new InvalidArgumentError("x-dnah-sha256 must be 64 lower-case hex digits");
    if (size !== undefined) {
      if (size > this.maxUploadBytes) throw tooLarge(this.maxUploadBytes);
      await this.quota.check(root, size);
    }
    const dir = uploadsDirOf(root);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const meta: UploadMeta = {
      uploadId: randomBytes(16).toString("hex"),
      path: `/${segs.join("/")}`,
      size,
      sha256,
      expiresAt: Date.now() + this.ttlMs,
      received: [],
    };
    const fh = await open(join(dir, `${meta.uploadId}.part`), "wx", 0o644);
    await fh.close();
    await this.save(dir, meta);
    return meta;
  }

  /** The upload `uploadId` of the share `root`, checked to be for `rel`; 404 when unknown or expired. */
  async get(root: string, uploadId: string, rel: string): Promise<UploadMeta> {
    if (!UPLOAD_ID_RE.test(uploadId)) throw new InvalidArgumentError("uploadId must be 32 hex digits");
    const dir = uploadsDirOf(root);
    let meta: UploadMeta;
    try {
      meta = JSON.parse(await readFile(join(dir, `${uploadId}.json`), "utf8")) as UploadMeta;
    } catch {
      throw new ShareError(
        404,
        "not_found",
        `no upload '${uploadId}' in progress (completed, aborted or expired)`,
      );
    }
    if (meta.expiresAt <= Date.now()) {
      await this.remove(dir, uploadId);
      throw new ShareError(404, "not_found", `upload '${uploadId}' expired`);
    }
    const path = `/${shareSegments(rel).join("/")}`;
    if (path !== meta.path)
      throw new InvalidArgumentError(`upload '${uploadId}' is for '${meta.path}', not '${path}'`);
    return meta;
  }

  /**
   * Writes one chunk (`Content-Range: bytes a-b/total`) at its offset, then records its range.
   * A body shorter or longer than the range is refused and not recorded (its bytes may be
   * written over by a retry).
   */
  async writeChunk(
    root: string,
    uploadId: string,
    rel: string,
    contentRange: string | undefined,
    body: AsyncIterable<Buffer>,
  ): Promise<UploadMeta> {
    const meta = await this.get(root, uploadId, rel);
    const { start, end, total } = parseContentRange(contentRange, meta.size);
    if (total > this.maxUploadBytes) throw tooLarge(this.maxUploadBytes);
    if (meta.size === undefined) await this.quota.check(root, total);
    const dir = uploadsDirOf(root);
    const want = end - start + 1;
    let pos = start;
    const fh = await open(join(dir, `${uploadId}.part`), constants.O_WRONLY | constants.O_NOFOLLOW);
    const w = new BatchWriter(fh, start);
    try {
      for await (const chunk of body) {
        if (pos + chunk.length > end + 1)
          throw new InvalidArgumentError(
            `the chunk's body is longer than the ${want} bytes of its Content-Range`,
          );
        await w.write(chunk);
        pos += chunk.length;
      }
      await w.flush();
    } finally {
      await w.flush().catch(() => {});
      await fh.close();
    }
    if (pos !== end + 1)
      throw new InvalidArgumentError(
        `the chunk's body has ${pos - start} bytes, its Content-Range says ${want}; it was not recorded`,
      );
    return this.locked(uploadId, async () => {
      const now = await this.get(root, uploadId, rel);
      if (now.size !== undefined && now.size !== total)
        throw new ShareError(416, "out_of_range", `the upload is ${now.size} bytes, not ${total}`);
      now.size = total;
      now.received = addRange(now.received, start, end);
      await this.save(dir, now);
      return now;
    });
  }

  /**
   * Checks every byte is there and the sha256 (when given), then renames the file into place.
   * A checksum mismatch or an exceeded quota discards the upload.
   */
  async complete(
    root: string,
    uploadId: string,
    rel: string,
    opts: { digest: boolean; durable: boolean } = { digest: false, durable: false },
  ): Promise<{ path: string; sizeBytes: number; sha256?: string }> {
    return this.locked(uploadId, async () => {
      const meta = await this.get(root, uploadId, rel);
      const dir = uploadsDirOf(root);
      if (meta.size === undefined)
        throw new ShareError(
          409,
          "failed_precondition",
          "the upload's size is not known yet: send a chunk or x-dnah-size",
        );
      const gap = firstGap(meta.received, meta.size);
      if (gap !== undefined)
        throw new ShareError(
          409,
          "failed_precondition",
          `bytes ${gap[0]}-${gap[1]} of ${meta.size} have not been received; GET ?uploadId=${uploadId} lists what has`,
        );
      const part = join(dir, `${uploadId}.part`);
      const fh = await open(part, constants.O_RDWR | constants.O_NOFOLLOW);
      let sha256: string | undefined;
      try {
        await fh.truncate(meta.size);
        // Read back and hashed only when a checksum was given or the digest is asked for.
        if (meta.sha256 !== undefined || opts.digest) {
          const h = createHash("sha256");
          await pipeline(fh.createReadStream({ autoClose: false, highWaterMark: 1024 * 1024 }), h);
          sha256 = h.digest("hex");
        }
        await fh.chown(SHARE_UID, SHARE_GID);
        // Page-cache semantics unless durability is asked for (the rename is still atomic).
        if (opts.durable) await fh.sync();
      } finally {
        await fh.close();
      }
      if (meta.sha256 !== undefined && meta.sha256 !== sha256) {
        await this.remove(dir, uploadId);
        throw new ShareError(
          422,
          "data_loss",
          `the upload's sha256 is ${sha256}, not ${meta.sha256}; nothing was written and the upload is discarded`,
        );
      }
      try {
        await this.quota.check(root, meta.size);
      } catch (err) {
        await this.remove(dir, uploadId);
        throw err;
      }
      const segs = shareSegments(meta.path);
      const name = segs.at(-1)!;
      const parent = await openParent(root, segs, true);
      try {
        await moveInto(part, parent, name, opts.durable);
        if (opts.durable) await parent.sync();
      } finally {
        await parent.close();
      }
      this.quota.changed(root);
      await unlink(join(dir, `${uploadId}.json`)).catch(() => {});
      return { path: meta.path, sizeBytes: meta.size, ...(sha256 !== undefined ? { sha256 } : {}) };
    });
  }

  async abort(root: string, uploadId: string, rel: string): Promise<void> {
    await this.get(root, uploadId, rel);
    await this.locked(uploadId, () => this.remove(uploadsDirOf(root), uploadId));
  }

  /** Removes the expired uploads of these shares (and leftovers of interrupted ones); how many. */
  async sweep(roots: Iterable<string>): Promise<number> {
    let removed = 0;
    const now = Date.now();
    for (const root of roots) {
      const dir = uploadsDirOf(root);
      const names = await readdir(dir).catch(() => [] as string[]);
      for (const n of names) {
        const p = join(dir, n);
        if (n.endsWith(".json")) {
          const meta = await readFile(p, "utf8")
            .then((t) => JSON.parse(t) as UploadMeta)
            .catch(() => undefined);
          if (meta === undefined || meta.expiresAt <= now) {
            await this.remove(dir, n.slice(0, -5));
            removed++;
          }
        } else {
          // A .part without its .json, or a tar extraction a crash left: by age.
          const st = await stat(p).catch(() => undefined);
          const id = n.endsWith(".part") ? n.slice(0, -5) : undefined;
          const orphan = id === undefined || !names.includes(`${id}.json`);
          if (st !== undefined && orphan && now - st.mtimeMs > this.ttlMs) {
            await rm(p, { recursive: true, force: true });
            removed++;
          }
        }
      }
    }
    return removed;
  }

  private async save(dir: string, meta: UploadMeta): Promise<void> {
    const tmp = join(dir, `${meta.uploadId}.json.tmp`);
    await writeFile(tmp, JSON.stringify(meta), { mode: 0o600 });
    await rename(tmp, join(dir, `${meta.uploadId}.json`));
  }

  private async remove(dir: string, uploadId: string): Promise<void> {
    await unlink(join(dir, `${uploadId}.json`)).catch(() => {});
    await unlink(join(dir, `${uploadId}.part`)).catch(() => {});
  }

  private locked<T>(uploadId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(uploadId) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => {});
    this.locks.set(uploadId, tail);
    void tail.then(() => {
      if (this.locks.get(uploadId) === tail) this.locks.delete(uploadId);
    });
    return run;
  }
}

/**
 * Moves the finished file `from` (outside the share) to `name` in the share folder `parent`
 * in one rename; across file systems, through a temporary file beside the target.
 */
async function moveInto(from: string, parent: FileHandle, name: string, durable: boolean): Promise<void> {
  try {
    await rename(from, `/proc/self/fd/${parent.fd}/${name}`);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
  }
  const t = await createTempIn(parent, name);
  try {
    const src = await open(from, constants.O_RDONLY);
    try {
      await pipeline(
        src.createReadStream({ highWaterMark: 1024 * 1024 }),
        t.fh.createWriteStream({ autoClose: false, highWaterMark: 1024 * 1024 }),
      );
    } finally {
      await src.close().catch(() => {});
    }
    if (durable) await t.fh.sync();
    await commitIn(parent, t.tmp, name);
    await unlink(from).catch(() => {});
  } catch (err) {
    await unlink(`/proc/self/fd/${parent.fd}/${t.tmp}`).catch(() => {});
    throw err;
  } finally {
    await t.fh.close().catch(() => {});
  }
}
