import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, mkdir, open, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import {
  InvalidArgumentError,
  SnapshotExistsError,
  SnapshotInvalidError,
  SnapshotNotFoundError,
} from "../domain/errors.js";
import { KeyedSerial } from "../runtime/keyed-serial.js";
import type { Runtime } from "../runtime/runtime.js";
import { fsync } from "./archive/files.js";
import {
  buildManifest,
  checkSignedListing,
  compareFiles,
  type FoundFile,
  MANIFEST_MAX_BYTES,
  MANIFEST_NAME,
  SNAPSHOT_FILE_NAME_RE,
  type SnapshotFileEntry,
  sha256Hex,
  totalSize,
} from "./manifest.js";
import { tarCreate, tarExtract } from "./tar.js";

/** The sandbox's share folder, archived by this layer while the runtime holds it stopped. */
export const SHARE_TAR = "share.tar";
/** What the snapshot layer records of the source (listed and signed like every file). */
export const META_NAME = "snapshot.json";
/** Suffix of a folder still being written, a snapshot or an unarchive's copy (an id never holds a '.'). */
export const PARTIAL = ".partial";
/** Files hashed at once: enough to keep a disk busy, few enough to bound memory (1 MiB each). */
const HASH_CONCURRENCY = 4;
const HASH_CHUNK = 1024 * 1024;

export interface SnapshotMeta {
  readonly version: 1;
  readonly runtime: Runtime["name"];
  readonly sourceSandboxId: string;
  readonly templateId: string;
  readonly cpuCount: number;
  readonly memoryMib: number;
  /** True when memory and device state are in the folder (processes continue on restore). */
  readonly memory: boolean;
  readonly createdAtMs: number;
}

export interface WrittenSnapshot {
  readonly manifestSha256: string;
  readonly sizeBytes: number;
  readonly files: readonly SnapshotFileEntry[];
  readonly meta: SnapshotMeta;
  /** Part of the time spent hashing (the rest is the runtime's and the share's). */
  readonly hashMs: number;
}

export interface VerifiedSnapshot {
  readonly dir: string;
  readonly meta: SnapshotMeta;
  readonly files: readonly SnapshotFileEntry[];
  readonly verifyMs: number;
}

/** Streaming SHA-256 of one file: memory stays at one chunk whatever the file's size. */
export async function hashFile(path: string): Promise<string> {
  const h = createHash("sha256");
  await pipeline(createReadStream(path, { highWaterMark: HASH_CHUNK }), h);
  return h.digest("hex");
}

/** Hashes `names` in `dir`, a few at a time. */
async function hashAll(dir: string, names: readonly string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let next = 0;
  const worker = async () => {
    while (next < names.length) {
      const name = names[next++]!;
      out.set(name, await hashFile(join(dir, name)));
    }
  };
  await Promise.all(Array.from({ length: Math.min(HASH_CONCURRENCY, names.length) }, worker));
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

function parseMeta(bytes: Buffer): SnapshotMeta {
  const m = JSON.parse(bytes.toString("utf8")) as Partial<SnapshotMeta>;
  const ok =
    m.version === 1 &&
    (m.runtime === "jail" || m.runtime === "qemu" || m.runtime === "cloud-hypervisor") &&
    typeof m.sourceSandboxId === "string" &&
    typeof m.templateId === "string" &&
    Number.isInteger(m.cpuCount) &&
    Number.isInteger(m.memoryMib) &&
    typeof m.memory === "boolean" &&
    Number.isInteger(m.createdAtMs);
  if (!ok) throw new Error(`${META_NAME} is not a dnah snapshot description`);
  return m as SnapshotMeta;
}

/**
 * The host's snapshot folders, `<root>/<snapshot id>/`: writing (runtime files + share.tar +
 * snapshot.json, then MANIFEST), verifying against a signed digest, deleting. One lock per
 * snapshot id, so a delete waits for a restore that reads the folder.
 */
export class SnapshotStore {
  private readonly locks = new KeyedSerial();

  /** `hostPath`: the PATH for GNU tar (the vmm config's `hostPath`). */
  constructor(
    readonly root: string,
    private readonly hostPath: string,
  ) {}

  dirOf(id: string): string {
    return join(this.root, id);
  }

  /** Runs `fn` while no other write, restore or delete of snapshot `id` runs. */
  withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(id, fn);
  }

  /**
   * Snapshots sandbox `sandboxId` of `runtime` into a new folder `id`. It is written as
   * `<id>.partial/` and renamed into place once its MANIFEST is on disk, so a folder named by
   * its id is always whole; a write cut short (any failure, or the vmm killed) leaves at most
   * a `.partial` folder, removed here on failure or by `removePartial` at the next start.
   * The returned digest is the one to sign.
   */
  write(id: string, runtime: Runtime, sandboxId: string): Promise<WrittenSnapshot> {
    return this.withLock(id, async () => {
      await mkdir(this.root, { recursive: true, mode: 0o700 });
      const final = this.dirOf(id);
      if (await exists(final)) throw new SnapshotExistsError(id);
      const dir = `${final}${PARTIAL}`;
      // Under the lock no other write of this id runs: one left here is a dead run's.
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { mode: 0o700 });
      try {
        let shareArchived = false;
        const rs = await runtime.snapshot(sandboxId, dir, {
          whileStopped: async (shareDir) => {
            await tarCreate(shareDir, join(dir, SHARE_TAR), this.hostPath);
            shareArchived = true;
          },
        });
        if (!shareArchived)
          throw new Error(`the ${runtime.name} runtime never ran the snapshot's whileStopped hook`);
        const meta: SnapshotMeta = {
          version: 1,
          runtime: runtime.name,
          sourceSandboxId: sandboxId,
          templateId: rs.templateId,
          cpuCount: rs.cpuCount,
          memoryMib: rs.memoryMib,
          memory: rs.memory,
          createdAtMs: Date.now(),
        };
        await writeFile(join(dir, META_NAME), `${JSON.stringify(meta, null, 2)}\n`, {
          flag: "wx",
          mode: 0o600,
        });
        const names: string[] = [];
        for (const e of await readdir(dir, { withFileTypes: true })) {
          if (!e.isFile())
            throw new Error(`the ${runtime.name} runtime left '${e.name}', which is not a plain file`);
          if (!SNAPSHOT_FILE_NAME_RE.test(e.name) || e.name === MANIFEST_NAME)
            throw new Error(`the ${runtime.name} runtime wrote a file named ${JSON.stringify(e.name)}`);
          names.push(e.name);
        }
        const hashStarted = performance.now();
        const [digests, sizes] = await Promise.all([
          hashAll(dir, names),
          Promise.all(names.map(async (n) => (await lstat(join(dir, n))).size)),
        ]);
        const hashMs = performance.now() - hashStarted;
        const files = names.map((name, i) => ({ name, size: sizes[i]!, sha256: digests.get(name)! }));
        const manifest = buildManifest(files);
        const fh = await open(join(dir, MANIFEST_NAME), "wx", 0o600);
        try {
          await fh.writeFile(manifest);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await fsync(dir);
        await rename(dir, final);
        await fsync(this.root);
        return {
          manifestSha256: sha256Hex(manifest),
          sizeBytes: totalSize(files),
          files: [...files].sort((a, b) => (a.name < b.name ? -1 : 1)),
          meta,
          hashMs,
        };
      } catch (err) {
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
    });
  }

  /**
   * Checks folder `id` against the signed listing digest and size; call it under `withLock`.
   * Refuses (SnapshotInvalidError naming every fault found) anything but plain files, a
   * listing that does not hash to the digest or sum to the size, a missing, extra or
   * resized file (before hashing anything), and then any file whose digest differs.
   */
  async verify(id: string, expectedSha256: string, expectedSize: number | bigint): Promise<VerifiedSnapshot> {
    if (!/^[0-9a-f]{64}$/.test(expectedSha256))
      throw new InvalidArgumentError("manifest_sha256 must be 64 lower-case hex digits");
    const started = performance.now();
    const dir = this.dirOf(id);
    let entries: import("node:fs").Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new SnapshotNotFoundError(id);
      throw err;
    }
    const refuse = (problems: string[]) => new SnapshotInvalidError(id, problems);
    const odd = entries.filter((e) => !e.isFile()).map((e) => `${e.name}: not a plain file`);
    if (odd.length > 0) throw refuse(odd.sort());
    if (!entries.some((e) => e.name === MANIFEST_NAME)) throw refuse([`${MANIFEST_NAME}: missing`]);
    const mst = await lstat(join(dir, MANIFEST_NAME));
    if (mst.size > MANIFEST_MAX_BYTES)
      throw refuse([`${MANIFEST_NAME}: larger than ${MANIFEST_MAX_BYTES} bytes`]);
    const listing = checkSignedListing(
      await readFile(join(dir, MANIFEST_NAME)),
      expectedSha256,
      expectedSize,
    );
    if (listing.problems.length > 0) throw refuse(listing.problems);
    const found: FoundFile[] = await Promise.all(
      entries
        .filter((e) => e.name !== MANIFEST_NAME)
        .map(async (e) => ({ name: e.name, size: (await lstat(join(dir, e.name))).size })),
    );
    const sizeProblems = compareFiles(listing.files, found);
    if (sizeProblems.length > 0) throw refuse(sizeProblems);
    const digests = await hashAll(
      dir,
      listing.files.map((f) => f.name),
    );
    const problems = compareFiles(
      listing.files,
      found.map((f) => ({ ...f, sha256: digests.get(f.name) })),
    );
    if (problems.length > 0) throw refuse(problems);
    if (!listing.files.some((f) => f.name === META_NAME)) throw refuse([`${META_NAME}: not in the listing`]);
    if (!listing.files.some((f) => f.name === SHARE_TAR)) throw refuse([`${SHARE_TAR}: not in the listing`]);
    let meta: SnapshotMeta;
    try {
      meta = parseMeta(await readFile(join(dir, META_NAME)));
    } catch (err) {
      throw refuse([`${META_NAME}: ${(err as Error).message}`]);
    }
    return { dir, meta, files: listing.files, verifyMs: performance.now() - started };
  }

  /** Fills a new sandbox's (empty) share from a verified folder's share.tar. */
  extractShare(dir: string, shareDir: string): Promise<void> {
    return tarExtract(join(dir, SHARE_TAR), shareDir, this.hostPath);
  }

  /**
   * Removes the `.partial` folders in the snapshots folder: writes and unarchives a killed
   * vmm never finished. Call it at start, before any write or unarchive runs. Their names.
   */
  async removePartial(): Promise<string[]> {
    let names: string[];
    try {
      names = (await readdir(this.root)).filter((n) => n.endsWith(PARTIAL));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    for (const n of names) await rm(join(this.root, n), { recursive: true, force: true });
    return names;
  }

  /** Removes folder `id`; false when there was none. */
  delete(id: string): Promise<boolean> {
    return this.withLock(id, async () => {
      const dir = this.dirOf(id);
      try {
        await lstat(dir);
      } catch {
        return false;
      }
      await rm(dir, { recursive: true, force: true });
      return true;
    });
  }
}
