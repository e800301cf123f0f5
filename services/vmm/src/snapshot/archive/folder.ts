import { mkdir, rename, rm } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { InvalidArgumentError, SNAPSHOT_ID_RE } from "../../domain/errors.js";
import type { ArchiveBackend, Progress } from "./backend.js";
import { copyFiles, fsync, isDir, plainFiles } from "./files.js";

/** Suffix of a copy in progress; a snapshot id never holds a '.', so it never names an archive. */
const PARTIAL = ".partial";

/**
 * Archive storage in a folder (`DNAH_ARCHIVE_DIR`): `<root>/<snapshot id>/`, a byte-for-byte
 * copy of the snapshot folder. A copy goes to `<id>.partial/`, is fsynced, then renamed, so a
 * folder under its own name is complete. Addressed by `file://` URIs; only a folder directly
 * inside the root, named like a snapshot, is ever read or removed.
 */
export class FolderArchive implements ArchiveBackend {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  get where(): string {
    return this.root;
  }

  uriOf(id: string): string {
    return pathToFileURL(join(this.root, id)).href;
  }

  idOf(uri: string, expectId?: string): string {
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
    if (dirname(dir) !== this.root || !SNAPSHOT_ID_RE.test(id))
      throw new InvalidArgumentError(`archive_uri ${JSON.stringify(uri)} is not inside this host's archive`);
    if (expectId !== undefined && id !== expectId)
      throw new InvalidArgumentError(
        `archive_uri ${JSON.stringify(uri)} does not hold snapshot '${expectId}'`,
      );
    return id;
  }

  has(id: string): Promise<boolean> {
    return isDir(join(this.root, id));
  }

  async sizeOf(id: string): Promise<number> {
    return (await plainFiles(join(this.root, id))).reduce((n, f) => n + f.size, 0);
  }

  async put(id: string, srcDir: string, progress: Progress): Promise<number> {
    const dest = join(this.root, id);
    const partial = `${dest}${PARTIAL}`;
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    await rm(partial, { recursive: true, force: true });
    await mkdir(partial, { mode: 0o700 });
    try {
      const bytes = await copyFiles(srcDir, partial, progress);
      await fsync(partial);
      await rename(partial, dest);
      await fsync(this.root);
      return bytes;
    } catch (err) {
      await rm(partial, { recursive: true, force: true });
      throw err;
    }
  }

  get(id: string, destDir: string, progress: Progress): Promise<number> {
    return copyFiles(join(this.root, id), destDir, progress);
  }

  async remove(id: string): Promise<boolean> {
    const dir = join(this.root, id);
    const had = await isDir(dir);
    await rm(`${dir}${PARTIAL}`, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
    return had;
  }
}
