import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import {
  type FileHandle,
  lchown,
  lstat,
  mkdir,
  open,
  readdir,
  readlink,
  rename,
  rm,
  symlink,
  unlink,
} from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { extract, type Header, type Pack } from "tar-stream";
import { InvalidArgumentError } from "../domain/errors.js";
import {
  linkOr,
  openFileIn,
  openParent,
  SHARE_GID,
  SHARE_UID,
  SharePathError,
  shareSegments,
} from "./beneath.js";
import { ShareError } from "./errors.js";

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
/** Entries one tar may hold. */
export const MAX_TAR_ENTRIES = 100_000;
const READ_HWM = 1024 * 1024;

const at = (dir: FileHandle, name: string) => `/proc/self/fd/${dir.fd}/${name}`;

/**
 * Writes the folder `dir` (open, links refused on the way to it) into `pack` as a tar: entries
 * relative to it, regular files, folders and symbolic links (stored as links, never followed);
 * sockets, fifos and devices are left out. Each component is opened without following links,
 * like every share path. Does not finalize `pack`.
 */
export async function packFolder(dir: FileHandle, pack: Pack, prefix = ""): Promise<void> {
  const names = (await readdir(`/proc/self/fd/${dir.fd}`)).sort();
  for (const name of names) {
    const rel = `${prefix}${name}`;
    const st = await lstat(at(dir, name)).catch(() => undefined);
    if (st === undefined) continue; // gone meanwhile
    const base = { name: rel, mode: st.mode & 0o7777, mtime: st.mtime, uid: st.uid, gid: st.gid };
    if (st.isSymbolicLink()) {
      const target = await readlink(at(dir, name)).catch(() => undefined);
      if (target !== undefined) await entry(pack, { ...base, type: "symlink", linkname: target, size: 0 });
    } else if (st.isDirectory()) {
      let sub: FileHandle;
      try {
        sub = await open(at(dir, name), DIR_FLAGS);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw linkOr(err, name);
      }
      try {
        await entry(pack, { ...base, type: "directory", size: 0 });
        await packFolder(sub, pack, `${rel}/`);
      } finally {
        await sub.close();
      }
    } else if (st.isFile()) {
      let fh: FileHandle;
      try {
        fh = await openFileIn(dir, name);
      } catch (err) {
        // Gone or no longer a plain file (the sandbox changed it meanwhile): left out.
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT" || code === "EISDIR" || err instanceof SharePathError) continue;
        throw err;
      }
      try {
        const fst = await fh.stat();
        if (!fst.isFile()) continue;
        const src =
          fst.size === 0
            ? Readable.from([])
            : fh.createReadStream({ autoClose: false, start: 0, end: fst.size - 1, highWaterMark: READ_HWM });
        await entry(pack, { ...base, type: "file", size: fst.size }, src);
      } finally {
        await fh.close();
      }
    }
  }
}

/** Adds one entry, its bytes copied from `src` with backpressure. */
function entry(
  pack: Pack,
  header: Partial<Header> & { name: string },
  src?: AsyncIterable<Buffer>,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
    if (src === undefined) return void sink.end(undefined);
    (async () => {
      for await (const chunk of src) {
        if (!sink.write(chunk)) await new Promise<void>((r) => sink.once("drain", () => r()));
      }
      sink.end(undefined);
    })().catch((err: Error) => {
      sink.destroy(err);
      reject(err);
    });
  });
}

/** The checked segments of a tar entry's name (pure): relative, no '..', '.' dropped; [] for the root. */
export function tarEntrySegments(name: string): string[] {
  if (name.startsWith("/"))
    throw new InvalidArgumentError(`tar entry '${name.slice(0, 200)}' has an absolute name`);
  const segs = name.split("/").filter((s) => s !== "" && s !== ".");
  if (segs.includes(".."))
    throw new InvalidArgumentError(`tar entry '${name.slice(0, 200)}' has a '..' segment`);
  if (segs.length === 0) return [];
  return shareSegments(segs.join("/"));
}

export interface ExtractLimits {
  /** Largest sum of file bytes. */
  maxBytes: number;
  /** Called with each file's bytes as they come (the quota); throws to stop. */
  take(n: number): void;
}

/**
 * Extracts the tar `body` into the share folder `root`/`rel` (made if missing). Everything is
 * first written into a fresh folder under `stagingDir` (outside the share), where an entry
 * with an absolute name, a '..' segment, a path through a symbolic link (one from the tar or
 * not), a hard link, a device or a fifo fails the whole tar; only then are the entries moved
 * into place (folders merged, files and links replaced), after checking no file would replace
 * a folder or the reverse. A failure leaves the share as it was. Returns the entry count and
 * file bytes.
 */
export async function extractTar(
  body: AsyncIterable<Buffer>,
  root: string,
  rel: string,
  stagingDir: string,
  limits: ExtractLimits,
): Promise<{ entries: number; bytes: number }> {
  await mkdir(stagingDir, { recursive: true, mode: 0o700 });
  const staging = join(stagingDir, `tar-${randomBytes(8).toString("hex")}`);
  await mkdir(staging, { mode: 0o755 });
  try {
    const counts = await extractToStaging(body, staging, limits);
    const targetSegs = rel.split("/").some((s) => s !== "") ? shareSegments(rel) : [];
    const src = await open(staging, DIR_FLAGS);
    let dst: FileHandle | undefined;
    try {
      dst = await openParent(root, [...targetSegs, "-"], true);
      await merge(src, dst, "", true);
      await merge(src, dst, "", false);
      await dst.sync();
    } finally {
      await src.close();
      await dst?.close();
    }
    return counts;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function extractToStaging(
  body: AsyncIterable<Buffer>,
  staging: string,
  limits: ExtractLimits,
): Promise<{ entries: number; bytes: number }> {
  const ex = extract();
  let stopped = false;
  // Fed by hand: a refused tar stops reading the body without destroying the request, so the
  // refusal can still be answered.
  const feed = (async () => {
    try {
      for await (const chunk of body) {
        if (stopped) return;
        if (!ex.write(chunk))
          await new Promise<void>((r) => {
            // Whichever comes first removes both: one wait per full buffer, none left behind.
            const go = () => {
              ex.off("drain", go);
              ex.off("close", go);
              r();
            };
            ex.once("drain", go);
            ex.once("close", go);
          });
      }
      if (!stopped) ex.end(undefined);
    } catch (err) {
      ex.destroy(err as Error);
    }
  })();
  let entries = 0;
  let bytes = 0;
  const dirModes: Array<[string[], number]> = [];
  try {
    for await (const e of ex) {
      const h = e.header;
      if (++entries > MAX_TAR_ENTRIES)
        throw new InvalidArgumentError(`a tar may hold at most ${MAX_TAR_ENTRIES} entries`);
      const segs = tarEntrySegments(h.name);
      const kind = h.type;
      if (kind !== "file" && kind !== "contiguous-file" && kind !== "directory" && kind !== "symlink")
        throw new InvalidArgumentError(
          `tar entry '${h.name.slice(0, 200)}' is a ${kind === "link" ? "hard link" : kind}; only files, folders and symbolic links are extracted`,
        );
      if (segs.length === 0) {
        if (kind !== "directory") throw new InvalidArgumentError("a tar entry names no file");
        for await (const _ of e);
        continue;
      }
      const name = segs.at(-1)!;
      const parent = await openParent(staging, segs, true);
      try {
        const path = at(parent, name);
        const prior = await lstat(path).catch(() => undefined);
        if (kind === "directory") {
          if (prior === undefined) await mkdir(path, { mode: 0o755 });
          else if (!prior.isDirectory())
            throw new InvalidArgumentError(
              `tar entry '${h.name.slice(0, 200)}' is a folder and, earlier, not`,
            );
          const d = await open(path, DIR_FLAGS);
          await d.chown(SHARE_UID, SHARE_GID).finally(() => d.close());
          dirModes.push([segs, h.mode & 0o777]);
          for await (const _ of e);
        } else if (kind === "symlink") {
          if (prior !== undefined) {
            if (prior.isDirectory())
              throw new InvalidArgumentError(
                `tar entry '${h.name.slice(0, 200)}' is a link and, earlier, a folder`,
              );
            await unlink(path);
          }
          await symlink(h.linkname, path);
          await lchownAt(path);
          for await (const _ of e);
        } else {
          if (prior?.isDirectory())
            throw new InvalidArgumentError(
              `tar entry '${h.name.slice(0, 200)}' is a file and, earlier, a folder`,
            );
          // O_NOFOLLOW: a link the tar made earlier at this name is not written through.
          let fh: FileHandle;
          try {
            fh = await open(
              path,
              constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
              0o600,
            );
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === "ELOOP")
              throw new ShareError(
                403,
                "permission_denied",
                `tar entry '${h.name.slice(0, 200)}' would write through a symbolic link`,
              );
            throw err;
          }
          try {
            for await (const chunk of e as AsyncIterable<Buffer>) {
              bytes += chunk.length;
              if (bytes > limits.maxBytes)
                throw new ShareError(
                  413,
                  "resource_exhausted",
                  `a tar may hold at most ${limits.maxBytes} bytes of files; nothing was written`,
                );
              limits.take(chunk.length);
              await fh.write(chunk);
            }
            await fh.chown(SHARE_UID, SHARE_GID);
            await fh.chmod(h.mode & 0o777);
            await fh.utimes(h.mtime, h.mtime);
          } finally {
            await fh.close();
          }
        }
      } finally {
        await parent.close();
      }
    }
  } catch (err) {
    stopped = true;
    ex.destroy();
    throw mapOpenError(err);
  }
  await feed;
  // Folder modes last, deepest first: a read-only folder is still filled.
  for (const [segs, mode] of dirModes.reverse()) {
    const parent = await openParent(staging, segs, false);
    await open(at(parent, segs.at(-1)!), DIR_FLAGS)
      .then((d) => d.chmod(mode | 0o700).finally(() => d.close()))
      .finally(() => parent.close());
  }
  return { entries, bytes };
}

/** A path through a link while extracting is a 403 refusal of the tar; other errors as they are. */
function mapOpenError(err: unknown): unknown {
  if (err instanceof Error && err.name === "SharePathError")
    return new ShareError(403, "permission_denied", `the tar writes through a symbolic link: ${err.message}`);
  return err;
}

function lchownAt(path: string): Promise<void> {
  return lchown(path, SHARE_UID, SHARE_GID);
}

/**
 * Moves what the staging folder `src` holds into the share folder `dst`: a folder into a
 * folder is merged, anything else replaces what is there. `check` only looks, and throws a
 * 409 when a file would replace a folder, a folder a file or a link, or a link stands where
 * a folder is merged (so nothing moves unless all of it can).
 */
async function merge(src: FileHandle, dst: FileHandle, prefix: string, check: boolean): Promise<void> {
  for (const name of await readdir(`/proc/self/fd/${src.fd}`)) {
    const s = await lstat(at(src, name));
    const d = await lstat(at(dst, name)).catch(() => undefined);
    if (d === undefined) {
      if (!check) await rename(at(src, name), at(dst, name));
      continue;
    }
    if (s.isDirectory() !== d.isDirectory() || (s.isDirectory() && d.isSymbolicLink()))
      throw new ShareError(
        409,
        "failed_precondition",
        `'${prefix}${name}' is a ${d.isDirectory() ? "folder" : d.isSymbolicLink() ? "link" : "file"} in the share and a ${s.isDirectory() ? "folder" : "file"} in the tar; nothing was written`,
      );
    if (s.isDirectory()) {
      const sd = await open(at(src, name), DIR_FLAGS);
      let dd: FileHandle | undefined;
      try {
        dd = await open(at(dst, name), DIR_FLAGS).catch((err) => {
          throw linkOr(err, name);
        });
        await merge(sd, dd, `${prefix}${name}/`, check);
      } finally {
        await sd.close();
        await dd?.close();
      }
    } else if (!check) await rename(at(src, name), at(dst, name));
  }
}
