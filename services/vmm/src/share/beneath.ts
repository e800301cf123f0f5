import { constants } from "node:fs";
import { type FileHandle, mkdir, open, rename, unlink } from "node:fs/promises";
import { InvalidArgumentError } from "../domain/errors.js";

/** The sandbox user's uid and gid (templates create `user` as 1000): owner of what the host writes. */
export const SHARE_UID = 1000;
export const SHARE_GID = 1000;
const MAX_PATH_BYTES = 4096;
const MAX_SEGMENT_BYTES = 255;

/** The path is not allowed in the share (escape, link, bad name): 403 at the edge. */
export class SharePathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SharePathError";
  }
}

/**
 * A share-relative path split into checked segments (pure): no NUL, no empty, `.` or `..`
 * segment, at most 4096 bytes in all and 255 per segment. Leading and doubled '/' are
 * ignored; anything else is an InvalidArgumentError.
 */
export function shareSegments(rel: string): string[] {
  if (rel.includes("\0")) throw new InvalidArgumentError("path must not contain NUL");
  if (Buffer.byteLength(rel) > MAX_PATH_BYTES)
    throw new InvalidArgumentError("path is longer than 4096 bytes");
  const segs = rel.split("/").filter((s) => s !== "");
  if (segs.length === 0) throw new InvalidArgumentError("path names no file");
  for (const s of segs) {
    if (s === "." || s === "..") throw new InvalidArgumentError("path must not contain '.' or '..' segments");
    if (Buffer.byteLength(s) > MAX_SEGMENT_BYTES)
      throw new InvalidArgumentError("a path segment is longer than 255 bytes");
  }
  return segs;
}

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/**
 * Path lookups that cannot leave `root`, even while the sandbox changes its share: every
 * component is opened with O_NOFOLLOW relative to the directory opened before it, through
 * `/proc/self/fd/<fd>/<name>` (Node has no openat; the magic link pins the directory's
 * inode, so a component swapped for a link afterwards is not followed). A link anywhere on
 * the path is a SharePathError. `create` makes missing directories (owned by the sandbox user).
 */
export async function openParent(
  root: string,
  segs: readonly string[],
  create: boolean,
): Promise<FileHandle> {
  let dir = await open(root, DIR_FLAGS);
  try {
    for (const seg of segs.slice(0, -1)) {
      const at = `/proc/self/fd/${dir.fd}/${seg}`;
      let next: FileHandle;
      try {
        next = await open(at, DIR_FLAGS);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT" && create) {
          await mkdir(at, { mode: 0o755 }).catch((e: NodeJS.ErrnoException) => {
            if (e.code !== "EEXIST") throw e;
          });
          next = await open(at, DIR_FLAGS);
          await next.chown(SHARE_UID, SHARE_GID);
        } else throw linkOr(err, seg);
      }
      await dir.close();
      dir = next;
    }
    return dir;
  } catch (err) {
    await dir.close();
    throw err;
  }
}

/** ELOOP / ENOTDIR on an O_NOFOLLOW open: a link (or a file) where a directory was wanted. */
export function linkOr(err: unknown, seg: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ELOOP" || code === "ENOTDIR")
    return new SharePathError(
      `'${seg}' is a link or not a folder; the share is read without following links`,
    );
  return err;
}

/** Linux's O_PATH (Node's `fs.constants` lacks it): a handle on an inode that opens nothing. */
const O_PATH = 0o10000000;

/**
 * Opens the plain file `name` in the directory `dir` for reading. The name is pinned first
 * with O_PATH | O_NOFOLLOW, which opens nothing: a fifo the sandbox put there cannot block the
 * vmm, a device node is never opened. Only a regular file is then opened, through the pin's
 * magic link (the same inode, whatever the sandbox renames meanwhile). A link or anything but
 * a plain file is a SharePathError, a folder EISDIR.
 */
export async function openFileIn(dir: FileHandle, name: string): Promise<FileHandle> {
  let pin: FileHandle;
  try {
    pin = await open(`/proc/self/fd/${dir.fd}/${name}`, O_PATH | constants.O_NOFOLLOW);
  } catch (err) {
    throw linkOr(err, name);
  }
  try {
    const st = await pin.stat();
    if (st.isSymbolicLink())
      throw new SharePathError(`'${name}' is a link; the share is read without following links`);
    if (st.isDirectory()) throw Object.assign(new Error(`'${name}' is a folder`), { code: "EISDIR" });
    if (!st.isFile()) throw new SharePathError(`'${name}' is not a plain file`);
    return await open(`/proc/self/fd/${pin.fd}`, constants.O_RDONLY);
  } finally {
    await pin.close();
  }
}

/** A new temporary file in `dir` (never visible under the final name until `commit`). */
export async function createTempIn(dir: FileHandle, name: string): Promise<{ fh: FileHandle; tmp: string }> {
  const tmp = `.${name.slice(0, 200)}.dnah-upload-${process.pid}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const fh = await open(
    `/proc/self/fd/${dir.fd}/${tmp}`,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o644,
  );
  await fh.chown(SHARE_UID, SHARE_GID);
  return { fh, tmp };
}

/** Renames the temporary file over `name` in the same directory (a link there is replaced, not followed). */
export function commitIn(dir: FileHandle, tmp: string, name: string): Promise<void> {
  return rename(`/proc/self/fd/${dir.fd}/${tmp}`, `/proc/self/fd/${dir.fd}/${name}`);
}

export async function discardIn(dir: FileHandle, tmp: string): Promise<void> {
  await unlink(`/proc/self/fd/${dir.fd}/${tmp}`).catch(() => {});
}
