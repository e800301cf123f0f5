import { type FSWatcher, watch } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { basename, join } from "node:path";

export type ShareEventType = "create" | "write" | "remove" | "rename" | "chmod";

/** One change in a sandbox's share; `path` is share-relative with a leading '/' (`/a/b.txt`). */
export interface ShareEvent {
  type: ShareEventType;
  path: string;
  /** Milliseconds since the epoch. */
  at: number;
}

export type ShareListener = (ev: ShareEvent) => void;

/** The same (type, path) seen again within this long is one event (a write is many inotify events). */
const COALESCE_MS = 250;
/** Coalescing and mtime memories are cleared when they grow past this. */
const MEMORY_MAX = 10_000;
/** Names remembered as existing (to order appear/go events); past it, lstat alone decides. */
const KNOWN_MAX = 100_000;
/** Upload temporaries (`beneath.ts` createTempIn) are not part of the share's visible history. */
const UPLOAD_TEMP_RE = /\.dnah-upload-[^/]*$/;

interface Feed {
  root: string;
  listeners: Set<ShareListener>;
  failed: Set<(err: Error) => void>;
  watcher: { close(): void } | undefined;
  /** Settles once the folders already there are watched. */
  ready: Promise<void>;
  /** `${type} ${path}` → when it was last delivered. */
  recent: Map<string, number>;
  mtimes: Map<string, bigint>;
  /** Share-relative names (no leading '/') believed to exist; `exact` false once past KNOWN_MAX. */
  known: Set<string>;
  exact: boolean;
  chain: Promise<void>;
}

/**
 * Per-sandbox events of the share folder on this host, for watchers (`watch-routes.ts`).
 *
 * The source is the host folder itself (inotify through `fs.watch`, recursive), started when a
 * sandbox gets its first subscriber and stopped with its last. The host sees every writer of
 * that folder: the vmm's own share routes (uploads, whatever their shape), and the guest's
 * writes too (a bind mount in the jail runtime; virtiofsd writes the same folder in a VM),
 * even while the guest is paused. Guest inotify, by contrast, does not see host writes
 * through virtio-fs with `--cache=never`. `publish()` lets a writer add an event
 * explicitly; the same (type, path) within COALESCE_MS is delivered once, whichever
 * source reported it first.
 */
export class ShareEventBus {
  private readonly feeds = new Map<string, Feed>();

  /**
   * Calls `listener` for each event of the sandbox's share (root `root`) until `close()` is
   * called; `onError` once if the folder cannot be watched any more. `ready` settles once the
   * folders already in the share are watched.
   */
  subscribe(
    sandboxId: string,
    root: string,
    listener: ShareListener,
    onError: (err: Error) => void,
  ): { close(): void; ready: Promise<void> } {
    let feed = this.feeds.get(sandboxId);
    if (feed === undefined) {
      feed = {
        root,
        listeners: new Set(),
        failed: new Set(),
        watcher: undefined,
        ready: Promise.resolve(),
        recent: new Map(),
        mtimes: new Map(),
        known: new Set(),
        exact: true,
        chain: Promise.resolve(),
      };
      feed.watcher = this.startWatcher(sandboxId, feed);
      this.feeds.set(sandboxId, feed);
    }
    feed.listeners.add(listener);
    feed.failed.add(onError);
    const f = feed;
    const close = () => {
      f.listeners.delete(listener);
      f.failed.delete(onError);
      if (f.listeners.size === 0 && this.feeds.get(sandboxId) === f) {
        f.watcher?.close();
        this.feeds.delete(sandboxId);
      }
    };
    return { close, ready: f.ready };
  }

  /** Delivers an event to the sandbox's subscribers (none: nothing happens). */
  publish(sandboxId: string, ev: { type: ShareEventType; path: string }): void {
    const feed = this.feeds.get(sandboxId);
    if (feed === undefined) return;
    const path = `/${ev.path
      .split("/")
      .filter((s) => s !== "")
      .join("/")}`;
    if (UPLOAD_TEMP_RE.test(path)) return;
    const now = Date.now();
    const key = `${ev.type} ${path}`;
    const last = feed.recent.get(key);
    if (last !== undefined && now - last < COALESCE_MS) return;
    if (feed.recent.size >= MEMORY_MAX) feed.recent.clear();
    feed.recent.set(key, now);
    const out: ShareEvent = { type: ev.type, path, at: now };
    for (const l of feed.listeners) l(out);
  }

  /** Number of sandboxes watched now (tests: nothing is left behind). */
  get watched(): number {
    return this.feeds.size;
  }

  private startWatcher(sandboxId: string, feed: Feed): { close(): void } {
    const fail = (err: Error) => {
      for (const f of [...feed.failed]) f(err);
    };
    const remember = (name: string) => {
      if (!feed.exact) return;
      if (feed.known.size >= KNOWN_MAX) {
        feed.exact = false;
        feed.known.clear();
      } else feed.known.add(name);
    };
    // Node reports only "rename" and "change", as in the guest agent's watch: every appearance
    // and disappearance of a name is one "rename", in order, so a name remembered as existing
    // that is gone now went, and any other appeared (even if already gone again: its going is
    // the next event). A "change" is a write when the modification time moved, else a chmod.
    const classify = async (kind: string, name: string, dir: string): Promise<void> => {
      const full = join(feed.root, name);
      // A watched sub-folder that goes reports itself under its own name: its parent tells.
      if (dir !== "" && kind === "rename" && name === `${dir}/${basename(dir)}`) {
        if ((await lstat(join(feed.root, dir)).catch(() => undefined)) === undefined) {
          tree.drop(dir);
          return;
        }
      }
      const st = await lstat(full, { bigint: true }).catch(() => undefined);
      let type: ShareEventType;
      if (kind === "rename") {
        if (st || (feed.exact && !feed.known.has(name))) {
          type = "create";
          remember(name);
        } else {
          type = "remove";
          feed.known.delete(name);
        }
      } else {
        const before = feed.mtimes.get(full);
        type = st && before !== undefined && before === st.mtimeNs ? "chmod" : "write";
      }
      // Remembered from changes only: the first change after a name appears is a write, even
      // when the file was looked at (at its creation) after that write had happened.
      if (st && kind !== "rename") {
        if (feed.mtimes.size >= MEMORY_MAX) feed.mtimes.clear();
        feed.mtimes.set(full, st.mtimeNs);
      } else feed.mtimes.delete(full);
      if (st?.isDirectory() && kind === "rename") await tree.add(name, true);
      this.publish(sandboxId, { type, path: name });
    };
    const tree = new DirTree(
      feed.root,
      (kind, name, dir) => {
        if (UPLOAD_TEMP_RE.test(name)) return;
        feed.chain = feed.chain.then(() => classify(kind, name, dir)).catch(fail);
      },
      remember,
      fail,
    );
    // Events wait for the first look at the tree (what exists is known before they are read).
    feed.ready = tree.add("", false).catch(fail);
    feed.chain = feed.ready;
    return tree;
  }
}

/** Folders of one share watched at most (each is an inotify watch on the host). */
const MAX_WATCHED_DIRS = 10_000;

/**
 * A recursive watch built from one non-recursive `fs.watch` per folder (Node 20's recursive
 * mode on Linux misses folders created after it started). A new folder is added with what it
 * already holds, reported as created (it was filled before its watch began); a folder that
 * goes away drops its watch.
 */
class DirTree {
  private readonly dirs = new Map<string, FSWatcher>();
  private closed = false;

  constructor(
    private readonly root: string,
    /** A change of `rel`, seen by the watch of folder `dir`. */
    private readonly onChange: (kind: string, rel: string, dir: string) => void,
    /** `rel` existed when its folder's watch began. */
    private readonly onExisting: (rel: string) => void,
    private readonly onError: (err: Error) => void,
  ) {}

  /** Watches `rel` and the folders below it; `announce` reports what it holds as created. */
  async add(rel: string, announce: boolean): Promise<void> {
    if (this.closed || this.dirs.has(rel)) return;
    if (this.dirs.size >= MAX_WATCHED_DIRS) return;
    let w: FSWatcher;
    try {
      w = watch(rel === "" ? this.root : join(this.root, rel), { persistent: false });
    } catch (err) {
      // Gone already (removed right after it was made): nothing to watch.
      if ((err as NodeJS.ErrnoException).code === "ENOENT" && rel !== "") return;
      throw err;
    }
    this.dirs.set(rel, w);
    w.on("change", (kind, filename) => {
      if (this.closed || filename === null) return;
      const name = typeof filename === "string" ? filename : filename.toString("utf8");
      const child = rel === "" ? name : `${rel}/${name}`;
      if (kind === "rename" && this.dirs.has(child)) this.drop(child);
      this.onChange(kind, child, rel);
    });
    w.on("error", (err) => {
      // A watched sub-folder removed: its watch ends. The root's failing ends the feed.
      this.drop(rel);
      if (rel === "") this.onError(err);
    });
    const entries = await readdir(rel === "" ? this.root : join(this.root, rel), {
      withFileTypes: true,
    }).catch(() => []);
    for (const e of entries) {
      const child = rel === "" ? e.name : `${rel}/${e.name}`;
      if (announce) this.onChange("rename", child, rel);
      else {
        this.onExisting(child);
        if (e.isDirectory()) await this.add(child, false);
      }
    }
  }

  /** Stops watching folder `rel` and those below it. */
  drop(rel: string): void {
    for (const [k, w] of this.dirs)
      if (k === rel || k.startsWith(`${rel}/`) || rel === "") {
        w.close();
        this.dirs.delete(k);
      }
  }

  close(): void {
    this.closed = true;
    for (const w of this.dirs.values()) w.close();
    this.dirs.clear();
  }
}

/** The vmm's one bus: the watch route reads it, share writers may publish to it. */
export const shareEvents = new ShareEventBus();

/**
 * Reports a change a share route made (after it is committed), for watchers of the sandbox's
 * share. Optional: the bus watches the folder itself; an explicit event is coalesced with it.
 */
export function publishShareEvent(sandboxId: string, ev: { type: ShareEventType; path: string }): void {
  shareEvents.publish(sandboxId, ev);
}
