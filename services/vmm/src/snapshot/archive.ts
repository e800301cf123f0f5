import { createReadStream, createWriteStream } from "node:fs";
import { lstat, mkdir, open, readdir, rename, rm } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Logger } from "@dnah/platform";
import {
  checkSnapshotId,
  InvalidArgumentError,
  SnapshotExistsError,
  SnapshotNotFoundError,
} from "../domain/errors.js";
import type { SnapshotStore } from "./store.js";

/** Suffix of a copy in progress; a snapshot id never holds a '.', so it never names a snapshot. */
const PARTIAL = ".partial";
/** A copy logs its progress this often (only copies that last that long say anything midway). */
const PROGRESS_EVERY_MS = 2_000;
const COPY_CHUNK = 1024 * 1024;

/** Archive storage has no such snapshot (NotFound at the edge). */
export class ArchiveNotFoundError extends SnapshotNotFoundError {
  constructor(snapshotId: string, where: string) {
    super(snapshotId);
    this.message = `snapshot '${snapshotId}' is neither on this host nor in its archive (${where})`;
    this.name = "ArchiveNotFoundError";
  }
}

export interface CopyResult {
  readonly sizeBytes: number;
  readonly durationMs: number;
}

/**
 * A host's archive storage: a folder (`DNAH_ARCHIVE_DIR`) holding `<snapshot id>/`, each a
 * byte-for-byte copy of a snapshot folder. Every copy goes to `<name>.partial/`, is fsynced,
 * then renamed into place, so a folder under its own name is complete; a `.partial` left by a
 * crash is removed when the copy is tried again. One lock per snapshot id, shared with the
 * snapshot store, so archive, unarchive, delete and a restore of one id take turns.
 *
 * Archived folders are addressed by `file://` URIs; only a folder directly inside the archive
 * folder, named after the snapshot, is ever read or removed (see `pathOf`).
 */
export class ArchiveStore {
  readonly root: string;

  constructor(
    root: string,
    private readonly snapshots: SnapshotStore,
    private readonly logger: Logger,
  ) {
    this.root = resolve(root);
  }

  uriOf(id: string): string {
    return pathToFileURL(join(this.root, id)).href;
  }

  /**
   * The archived folder a URI names, refusing (InvalidArgumentError) anything but a
   * `file://` URI of a folder directly inside the archive folder, named `expectId` when given.
   */
  pathOf(uri: string, expectId?: string): { id: string; dir: string } {
    let path: string;
    try {
      const url = new URL(uri);
      if (url.protocol !== "file:") throw new Error(`scheme '${url.protocol}'`);
      if (url.search !== "" || url.hash !== "") throw new Error("query or fragment");
      path = fileURLToPath(url);
    } catch (err) {
      throw new InvalidArgumentError(
        `archive_uri must be a file:// URI inside this host's archive (${(err as Error).message})`,
      );
    }
    // URL parsing already folded any '..'; resolve makes the comparison exact.
    const dir = resolve(path);
    const id = basename(dir);
    if (dirname(dir) !== this.root || !/^[a-z0-9_-]{1,64}$/.test(id))
      throw new InvalidArgumentError(`archive_uri ${JSON.stringify(uri)} is not inside this host's archive`);
    if (expectId !== undefined && id !== expectId)
      throw new InvalidArgumentError(
        `archive_uri ${JSON.stringify(uri)} does not hold snapshot '${expectId}'`,
      );
    return { id, dir };
  }

  /**
   * Moves snapshot `id` into the archive: copy, fsync, rename, then remove the local folder.
   * Idempotent: a snapshot already archived (local folder gone, or left by a crash after the
   * rename) answers its archive again.
   */
  archive(id: string): Promise<CopyResult & { uri: string }> {
    checkSnapshotId(id);
    return this.snapshots.withLock(id, async () => {
      const started = performance.now();
      const local = this.snapshots.dirOf(id);
      const dest = join(this.root, id);
      const haveLocal = await isDir(local);
      const archived = await isDir(dest);
      if (!haveLocal) {
        if (!archived) throw new ArchiveNotFoundError(id, this.root);
        return { uri: this.uriOf(id), sizeBytes: await folderSize(dest), durationMs: 0 };
      }
      let sizeBytes: number;
      if (archived) {
        // A crash between the rename and the removal of the local folder: the copy is whole.
        sizeBytes = await folderSize(dest);
      } else {
        await mkdir(this.root, { recursive: true, mode: 0o700 });
        sizeBytes = await this.copyInto(local, dest, { "snapshot.id": id, what: "archive" });
      }
      await rm(local, { recursive: true, force: true });
      const durationMs = Math.round(performance.now() - started);
      this.logger.info({ "snapshot.id": id, sizeBytes, durationMs, archive: this.root }, "snapshot archived");
      return { uri: this.uriOf(id), sizeBytes, durationMs };
    });
  }

  /**
   * Copies archived snapshot `id` back into the snapshots folder (temp folder + rename). The
   * archive keeps its copy until DeleteArchive. A local folder already there is refused.
   */
  unarchive(id: string, uri: string): Promise<CopyResult> {
    checkSnapshotId(id);
    const { dir } = this.pathOf(uri, id);
    return this.snapshots.withLock(id, async () => {
      const started = performance.now();
      const local = this.snapshots.dirOf(id);
      if (await isDir(local)) throw new SnapshotExistsError(id);
      if (!(await isDir(dir))) throw new ArchiveNotFoundError(id, this.root);
      await mkdir(this.snapshots.root, { recursive: true, mode: 0o700 });
      const sizeBytes = await this.copyInto(dir, local, { "snapshot.id": id, what: "unarchive" });
      const durationMs = Math.round(performance.now() - started);
      this.logger.info({ "snapshot.id": id, sizeBytes, durationMs }, "snapshot unarchived");
      return { sizeBytes, durationMs };
    });
  }

  /** Removes an archived snapshot (and any partial copy of it); true when there was one. */
  delete(uri: string): Promise<boolean> {
    const { id, dir } = this.pathOf(uri);
    return this.snapshots.withLock(id, async () => {
      const had = await isDir(dir);
      await rm(`${dir}${PARTIAL}`, { recursive: true, force: true });
      await rm(dir, { recursive: true, force: true });
      if (had) this.logger.info({ "snapshot.id": id }, "archived snapshot deleted");
      return had;
    });
  }

  /**
   * Copies the plain files of `src` to `dest` through `<dest>.partial/` (a stale one is
   * removed first), fsyncing every file and both folders, so `dest` appears whole or not at
   * all. Returns the bytes copied.
   */
  private async copyInto(src: string, dest: string, fields: Record<string, string>): Promise<number> {
    const partial = `${dest}${PARTIAL}`;
    await rm(partial, { recursive: true, force: true });
    const entries = await readdir(src, { withFileTypes: true });
    const odd = entries.filter((e) => !e.isFile()).map((e) => e.name);
    if (odd.length > 0) throw new Error(`${src} holds entries that are not plain files: ${odd.join(", ")}`);
    const sizes = await Promise.all(entries.map(async (e) => (await lstat(join(src, e.name))).size));
    const total = sizes.reduce((a, b) => a + b, 0);
    const started = performance.now();
    let copied = 0;
    let lastLog = started;
    const progress = () => {
      const now = performance.now();
      if (now - lastLog < PROGRESS_EVERY_MS) return;
      lastLog = now;
      this.logger.info(
        { ...fields, copiedBytes: copied, totalBytes: total, mbPerS: mbPerS(copied, now - started) },
        "copying snapshot",
      );
    };
    await mkdir(partial, { mode: 0o700 });
    try {
      for (const e of entries) {
        const to = join(partial, e.name);
        await pipeline(
          createReadStream(join(src, e.name), { highWaterMark: COPY_CHUNK }),
          new Transform({
            transform(chunk: Buffer, _enc, cb) {
              copied += chunk.length;
              progress();
              cb(null, chunk);
            },
          }),
          createWriteStream(to, { flags: "wx", mode: 0o600 }),
        );
        await fsync(to);
      }
      await fsync(partial);
      await rename(partial, dest);
      await fsync(dirname(dest));
    } catch (err) {
      await rm(partial, { recursive: true, force: true });
      throw err;
    }
    const ms = performance.now() - started;
    this.logger.info(
      {
        ...fields,
        copiedBytes: copied,
        files: entries.length,
        durationMs: Math.round(ms),
        mbPerS: mbPerS(copied, ms),
      },
      "snapshot copied",
    );
    return copied;
  }
}

function mbPerS(bytes: number, ms: number): number {
  return ms <= 0 ? 0 : Math.round((bytes / (1024 * 1024) / (ms / 1000)) * 10) / 10;
}

async function fsync(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

async function folderSize(dir: string): Promise<number> {
  const entries = await readdir(dir, { withFileTypes: true });
  const sizes = await Promise.all(entries.map(async (e) => (await lstat(join(dir, e.name))).size));
  return sizes.reduce((a, b) => a + b, 0);
}
