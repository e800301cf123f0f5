import { type FSWatcher, watch } from "node:fs";
import { lstat, stat, statfs } from "node:fs/promises";
import { join } from "node:path";
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

/**
 * `fs.watch` (inotify) mapped to envd's events, `name` relative to the watched directory. Node
 * reports only "rename" and "change": a rename of a path that now exists is CREATE, of one that
 * is gone REMOVE (inotify's moved-from RENAME is not distinguishable); a change is WRITE when
 * the modification time moved, else CHMOD.
 */
export function startWatch(opts: WatchOptions): { close(): void } {
  const mtimes = new Map<string, bigint>();
  let chain = Promise.resolve();
  let closed = false;
  let watcher: FSWatcher;
  try {
    watcher = watch(opts.path, { recursive: opts.recursive, persistent: false });
  } catch (err) {
    throw fsError(err, `error watching path ${opts.path}`);
  }

  const classify = async (kind: string, name: string): Promise<void> => {
    const full = join(opts.path, name);
    const st = await lstat(full, { bigint: true }).catch(() => undefined);
    let type: EventType;
    if (kind === "rename") {
      type = st ? EventType.CREATE : EventType.REMOVE;
    } else {
      const before = mtimes.get(full);
      type = st && before !== undefined && before === st.mtimeNs ? EventType.CHMOD : EventType.WRITE;
    }
    if (st) {
      if (mtimes.size >= MTIME_CACHE_MAX) mtimes.clear();
      mtimes.set(full, st.mtimeNs);
    } else {
      mtimes.delete(full);
    }
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

  watcher.on("change", (kind, filename) => {
    if (closed || filename === null) return;
    const name = typeof filename === "string" ? filename : filename.toString("utf8");
    chain = chain
      .then(() => classify(kind, name))
      .catch((err: unknown) => opts.log.warn("watch event dropped", { path: opts.path, error: String(err) }));
  });
  watcher.on("error", (err) => {
    if (closed) return;
    closed = true;
    watcher.close();
    opts.onError(fsError(err, `error watching path ${opts.path}`));
  });

  return {
    close() {
      closed = true;
      watcher.close();
    },
  };
}
