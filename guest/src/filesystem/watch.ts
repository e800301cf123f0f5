import { type FSWatcher, watch } from "node:fs";
import { lstat, readdir, stat, statfs } from "node:fs/promises";
import { basename, join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { EventType, type FilesystemEventSchema } from "@dnah/proto/filesystem/filesystem_pb";
import { errnoOf, fsError, GuestError, invalidArgument, notFound } from "../errors.js";
import type { Logger } from "../log.js";
import type { UserDb } from "../users.js";
import { entryInfo } from "./entry-info.js";
import type { MetadataStore } from "./metadata.js";

export type FilesystemEventInit = MessageInitShape<typeof FilesystemEventSchema>;

/** statfs magic numbers of network filesystems envd refuses to watch (NFS, CIFS, SMB, SMB2, FUSE). */
const NETWORK_FS = new Set([0x6969, 0xff534d42, 0x517b, 0xfe534d42, 0x65735546]);
/** Modification times remembered to tell a write from a chmod; cleared when it grows past this. */
const MTIME_CACHE_MAX = 10_000;

/** WatchDir's preconditions: the path exists, is a directory, and is local unless allowed. */
export async function checkWatchable(path: string, allowNetworkMounts: boolean): Promise<void> {
  try {
    const st = await stat(path);
    if (!st.isDirectory()) throw invalidArgument(`path ${path} not a directory`);
    if (!allowNetworkMounts) {
      const fs = await statfs(path);
      if (NETWORK_FS.has(fs.type)) {
        throw invalidArgument(`cannot watch path on network filesystem: ${path}`);
      }
    }
  } catch (err) {
    if (err instanceof GuestError) throw err;
    if (errnoOf(err) === "ENOENT") throw notFound(`path ${path} not found: ${(err as Error).message}`, err);
    throw fsError(err, `error statting path ${path}`);
  }
}

export interface WatchOptions {
  path: string;
  recursive: boolean;
  includeEntry: boolean;
  users: UserDb;
  metadata: MetadataStore;
  log: Logger;
  onEvent: (ev: FilesystemEventInit) => void;
  onError: (err: GuestError) => void;
}

/** Folders one recursive watch follows at most (each is an inotify watch). */
const MAX_WATCHED_DIRS = 10_000;
/** Names remembered as existing (to order appear/go events); past it, lstat alone decides. */
const KNOWN_MAX = 100_000;

/**
 * `fs.watch` (inotify) mapped to envd's events, `name` relative to the watched directory. Node
 * reports only "rename" and "change". Every appearance and every disappearance of a name is one
 * "rename", in order, so a name remembered as existing that is gone now went (REMOVE), and any
 * other is an appearance (CREATE), even one already gone again by the time it is looked at (its
 * going is the next event); inotify's moved-from RENAME is not distinguishable from REMOVE. A
 * change is WRITE when the modification time moved, else CHMOD.
 *
 * Recursive watches are one non-recursive `fs.watch` per folder: Node 20's recursive mode on
 * Linux polls files it found later and misses quick changes in them. A folder created in the
 * tree is watched from then on, and what it already holds is reported as created. `ready`
 * settles once the folders already there are watched.
 */
export function startWatch(opts: WatchOptions): { close(): void; ready: Promise<void> } {
  const mtimes = new Map<string, bigint>();
  const known = new Set<string>();
  let exact = true;
  let chain = Promise.resolve();
  let closed = false;
  const dirs = new Map<string, FSWatcher>();

  const remember = (name: string) => {
    if (!exact) return;
    if (known.size >= KNOWN_MAX) {
      exact = false;
      known.clear();
    } else known.add(name);
  };

  const classify = async (kind: string, name: string): Promise<void> => {
    const full = join(opts.path, name);
    const st = await lstat(full, { bigint: true }).catch(() => undefined);
    let type: EventType;
    if (kind === "rename") {
      if (st || (exact && !known.has(name))) {
        type = EventType.CREATE;
        remember(name);
      } else {
        type = EventType.REMOVE;
        known.delete(name);
      }
    } else {
      const before = mtimes.get(full);
      type = st && before !== undefined && before === st.mtimeNs ? EventType.CHMOD : EventType.WRITE;
    }
    // Remembered from changes only: the first change after a name appears is a write, even
    // when the file was looked at (at its creation) after that write had happened.
    if (st && kind !== "rename") {
      if (mtimes.size >= MTIME_CACHE_MAX) mtimes.clear();
      mtimes.set(full, st.mtimeNs);
    } else {
      mtimes.delete(full);
    }
    if (opts.recursive && type === EventType.CREATE && st?.isDirectory()) await add(name, true);
    const ev: FilesystemEventInit = { name, type };
    if (opts.includeEntry && st && type !== EventType.REMOVE) {
      try {
        ev.entry = await entryInfo(full, await opts.users.names(), opts.metadata);
      } catch (err) {
        if (!(err instanceof GuestError && err.kind === "not_found")) {
          opts.log.warn("failed to get entry info for filesystem event", { path: full, error: String(err) });
        }
      }
    }
    if (!closed) opts.onEvent(ev);
  };
  /** Runs `step` after the events before it (inotify's order is kept). */
  const then = (step: () => Promise<void>) => {
    chain = chain
      .then(step)
      .catch((err: unknown) => opts.log.warn("watch event dropped", { path: opts.path, error: String(err) }));
  };
  const queue = (kind: string, name: string) => then(() => classify(kind, name));

  const drop = (rel: string) => {
    for (const [k, w] of dirs)
      if (k === rel || k.startsWith(`${rel}/`)) {
        w.close();
        dirs.delete(k);
      }
  };

  const fail = (err: unknown) => {
    if (closed) return;
    closed = true;
    for (const w of dirs.values()) w.close();
    dirs.clear();
    opts.onError(fsError(err, `error watching path ${opts.path}`));
  };

  /** Starts watching folder `rel` ("" the root, whose failure throws); false if it cannot be. */
  const watchFolder = (rel: string): boolean => {
    if (closed || dirs.has(rel)) return false;
    if (dirs.size >= MAX_WATCHED_DIRS) {
      opts.log.warn("too many folders to watch, not following more", { path: opts.path });
      return false;
    }
    const dir = rel === "" ? opts.path : join(opts.path, rel);
    let w: FSWatcher;
    try {
      w = watch(dir, { persistent: false });
    } catch (err) {
      if (rel === "") throw fsError(err, `error watching path ${opts.path}`);
      return false; // gone again already, or unreadable: not followed
    }
    dirs.set(rel, w);
    w.on("change", (kind, filename) => {
      if (closed || filename === null) return;
      const base = typeof filename === "string" ? filename : filename.toString("utf8");
      const name = rel === "" ? base : `${rel}/${base}`;
      // A watched sub-folder that goes reports itself under its own name: its parent tells.
      if (rel !== "" && kind === "rename" && base === basename(dir)) {
        then(async () => {
          if ((await lstat(dir).catch(() => undefined)) === undefined) drop(rel);
          else await classify(kind, name);
        });
        return;
      }
      if (kind === "rename" && dirs.has(name))
        then(async () => {
          if ((await lstat(join(opts.path, name)).catch(() => undefined)) === undefined) drop(name);
        });
      queue(kind, name);
    });
    w.on("error", (err) => {
      if (rel === "") fail(err);
      else drop(rel);
    });
    return true;
  };

  /** Watches folder `rel` and, when recursive, those below; `announce` reports what it holds as created. */
  async function add(rel: string, announce: boolean): Promise<void> {
    if (rel !== "" && !watchFolder(rel)) return;
    const dir = rel === "" ? opts.path : join(opts.path, rel);
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (closed) return;
      const child = rel === "" ? e.name : `${rel}/${e.name}`;
      if (announce) queue("rename", child);
      else {
        remember(child);
        if (opts.recursive && e.isDirectory()) await add(child, false);
      }
    }
  }

  watchFolder("");
  // What the tree holds is known before its events are looked at.
  then(() => add("", false));
  const ready = chain;

  return {
    ready,
    close() {
      closed = true;
      for (const w of dirs.values()) w.close();
      dirs.clear();
    },
  };
}
