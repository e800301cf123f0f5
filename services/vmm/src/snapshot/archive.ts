import { mkdir, rename, rm } from "node:fs/promises";
import type { Logger } from "@dnah/platform";
import { checkSnapshotId, SnapshotExistsError, SnapshotNotFoundError } from "../domain/errors.js";
import type { ArchiveBackend } from "./archive/backend.js";
import { fsync, isDir, plainFiles } from "./archive/files.js";
import { PARTIAL, type SnapshotStore } from "./store.js";

/** A copy logs its progress this often (only copies that last that long say anything midway). */
const PROGRESS_EVERY_MS = 2_000;
/** A caller watching an unarchive hears of its progress this often. */
const REPORT_EVERY_MS = 500;

/** Progress of a copy for a caller: bytes copied so far, of `total`. */
export type ProgressReport = (copied: number, total: number) => void;

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
 * A host's archive storage, in front of its backend (a folder, `archive/folder.ts`, or an
 * S3-compatible bucket, `archive/s3.ts`): moves snapshot folders there and back. One lock per
 * snapshot id, shared with the snapshot store, so archive, unarchive, delete and a restore of
 * one id take turns. Both directions are whole or nothing: the backend's put is atomic for
 * readers, and an unarchive writes `<id>.partial/` in the snapshots folder, fsyncs it and
 * renames it into place.
 */
export class ArchiveStore {
  constructor(
    readonly backend: ArchiveBackend,
    private readonly snapshots: SnapshotStore,
    private readonly logger: Logger,
  ) {}

  /**
   * Moves snapshot `id` into the archive, then removes the local folder. Idempotent: a
   * snapshot already archived (local folder gone, or left by a crash after the archive was
   * complete) answers its archive again.
   */
  archive(id: string): Promise<CopyResult & { uri: string }> {
    checkSnapshotId(id);
    return this.snapshots.withLock(id, async () => {
      const started = performance.now();
      const local = this.snapshots.dirOf(id);
      const haveLocal = await isDir(local);
      const archived = await this.backend.has(id);
      if (!haveLocal) {
        if (!archived) throw new ArchiveNotFoundError(id, this.backend.where);
        return { uri: this.backend.uriOf(id), sizeBytes: await this.backend.sizeOf(id), durationMs: 0 };
      }
      const sizeBytes = archived
        ? // A crash between a complete archive and the removal of the local folder.
          await this.backend.sizeOf(id)
        : await this.moved("archive", id, local, (p) => this.backend.put(id, local, p));
      await rm(local, { recursive: true, force: true });
      const durationMs = Math.round(performance.now() - started);
      this.logger.info(
        { "snapshot.id": id, sizeBytes, durationMs, archive: this.backend.where },
        "snapshot archived",
      );
      return { uri: this.backend.uriOf(id), sizeBytes, durationMs };
    });
  }

  /**
   * Copies archived snapshot `id` back into the snapshots folder. The archive keeps its copy
   * until DeleteArchive. A local folder already there is refused.
   */
  unarchive(id: string, uri: string, report?: ProgressReport): Promise<CopyResult> {
    checkSnapshotId(id);
    this.backend.idOf(uri, id);
    return this.snapshots.withLock(id, async () => {
      const started = performance.now();
      const local = this.snapshots.dirOf(id);
      if (await isDir(local)) throw new SnapshotExistsError(id);
      if (!(await this.backend.has(id))) throw new ArchiveNotFoundError(id, this.backend.where);
      const partial = `${local}${PARTIAL}`;
      await mkdir(this.snapshots.root, { recursive: true, mode: 0o700 });
      await rm(partial, { recursive: true, force: true });
      await mkdir(partial, { mode: 0o700 });
      let sizeBytes: number;
      try {
        sizeBytes = await this.moved("unarchive", id, local, (p) => this.backend.get(id, partial, p), report);
        await fsync(partial);
        await rename(partial, local);
        await fsync(this.snapshots.root);
      } catch (err) {
        await rm(partial, { recursive: true, force: true });
        throw err;
      }
      const durationMs = Math.round(performance.now() - started);
      this.logger.info({ "snapshot.id": id, sizeBytes, durationMs }, "snapshot unarchived");
      return { sizeBytes, durationMs };
    });
  }

  /** Removes an archived snapshot (and any incomplete copy of it); true when there was one. */
  delete(uri: string): Promise<boolean> {
    const id = this.backend.idOf(uri);
    return this.snapshots.withLock(id, async () => {
      const had = await this.backend.remove(id);
      if (had) this.logger.info({ "snapshot.id": id }, "archived snapshot deleted");
      return had;
    });
  }

  /** Runs one transfer with progress logs (every PROGRESS_EVERY_MS) and a summary line. */
  private async moved(
    what: "archive" | "unarchive",
    id: string,
    local: string,
    transfer: (progress: (bytes: number) => void) => Promise<number>,
    report?: ProgressReport,
  ): Promise<number> {
    const fields = { "snapshot.id": id, what, archive: this.backend.where };
    const total =
      what === "archive"
        ? (await plainFiles(local)).reduce((n, f) => n + f.size, 0)
        : await this.backend.sizeOf(id);
    const started = performance.now();
    let copied = 0;
    let lastLog = started;
    let lastReport = started;
    report?.(0, total);
    const bytes = await transfer((n) => {
      copied += n;
      const now = performance.now();
      if (report !== undefined && now - lastReport >= REPORT_EVERY_MS) {
        lastReport = now;
        report(copied, total);
      }
      if (now - lastLog < PROGRESS_EVERY_MS) return;
      lastLog = now;
      this.logger.info(
        { ...fields, copiedBytes: copied, totalBytes: total, mbPerS: mbPerS(copied, now - started) },
        "copying snapshot",
      );
    });
    const ms = performance.now() - started;
    this.logger.info(
      { ...fields, copiedBytes: bytes, durationMs: Math.round(ms), mbPerS: mbPerS(bytes, ms) },
      "snapshot copied",
    );
    return bytes;
  }
}

function mbPerS(bytes: number, ms: number): number {
  return ms <= 0 ? 0 : Math.round((bytes / (1024 * 1024) / (ms / 1000)) * 10) / 10;
}
