import { type BigIntStats, constants } from "node:fs";
import { lstat, realpath, stat } from "node:fs/promises";
import { basename } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type EntryInfoSchema, FileType } from "@dnah/proto/filesystem/filesystem_pb";
import { errnoOf, fsError, notFound } from "../errors.js";
import type { NameLookup } from "../users.js";
import type { MetadataStore } from "./metadata.js";

export type EntryInfoInit = MessageInitShape<typeof EntryInfoSchema>;

const { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFBLK, S_IFCHR, S_IFIFO, S_IFSOCK } = constants;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const S_ISVTX = 0o1000;

/**
 * envd's EntryInfo for `path` (not following a final symlink): a symlink reports its target's
 * type and permission bits plus `symlinkTarget`; `permissions` is Go's `FileMode.String()`.
 */
export async function entryInfo(
  path: string,
  names: NameLookup,
  metadata: MetadataStore | undefined,
): Promise<EntryInfoInit> {
  let st: BigIntStats;
  try {
    st = await lstat(path, { bigint: true });
  } catch (err) {
    if (errnoOf(err) === "ENOENT") throw notFound(`file not found: ${(err as Error).message}`, err);
    throw fsError(err, "error getting file info");
  }
  const rawMode = Number(st.mode);
  let type = fileType(rawMode);
  let mode = rawMode & 0o777;
  let symlinkTarget: string | undefined;
  if ((rawMode & S_IFMT) === S_IFLNK) {
    symlinkTarget = await realpath(path).catch(() => path);
    try {
      const target = await stat(symlinkTarget);
      type = fileType(target.mode);
      mode = target.mode & 0o777;
    } catch {
      type = FileType.UNSPECIFIED;
      mode = 0;
    }
  }
  const entry: EntryInfoInit = {
    name: basename(path) || path,
    type,
    path,
    size: st.size,
    mode,
    permissions: goFileMode(rawMode),
    owner: names.owner(Number(st.uid)),
    group: names.group(Number(st.gid)),
    modifiedTime: { seconds: st.mtimeNs / 1_000_000_000n, nanos: Number(st.mtimeNs % 1_000_000_000n) },
    metadata: {},
  };
  if (symlinkTarget !== undefined) entry.symlinkTarget = symlinkTarget;
  if (metadata) entry.metadata = (await metadata.read([path]))[0] ?? {};
  return entry;
}

function fileType(mode: number): FileType {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return FileType.FILE;
    case S_IFDIR:
      return FileType.DIRECTORY;
    case S_IFLNK:
      return FileType.SYMLINK;
    default:
      return FileType.UNSPECIFIED;
  }
}

/** Go's `os.FileMode.String()` for a Unix `st_mode` (as `os.Lstat` maps it). */
export function goFileMode(mode: number): string {
  const fmt = mode & S_IFMT;
  const flags = new Set<string>();
  if (fmt === S_IFDIR) flags.add("d");
  if (fmt === S_IFLNK) flags.add("L");
  if (fmt === S_IFBLK) flags.add("D");
  if (fmt === S_IFCHR) {
    flags.add("D");
    flags.add("c");
  }
  if (fmt === S_IFIFO) flags.add("p");
  if (fmt === S_IFSOCK) flags.add("S");
  if (mode & S_ISUID) flags.add("u");
  if (mode & S_ISGID) flags.add("g");
  if (mode & S_ISVTX) flags.add("t");
  let out = "";
  for (const c of "dalTLDpSugct?") if (flags.has(c)) out += c;
  if (out === "") out = "-";
  const rwx = "rwxrwxrwx";
  for (let i = 0; i < 9; i++) out += mode & (1 << (8 - i)) ? rwx[i] : "-";
  return out;
}
