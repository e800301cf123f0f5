import { randomUUID } from "node:crypto";
import { internal, notFound } from "../errors.js";
import type { Logger } from "../log.js";
import type { UserDb } from "../users.js";
import type { MetadataStore } from "./metadata.js";
import { type FilesystemEventInit, startWatch } from "./watch.js";

/** Events a polled watcher keeps between GetWatcherEvents calls; the oldest go first. */
const MAX_EVENTS = 10_000;

interface PolledWatcher {
  events: FilesystemEventInit[];
  failure: Error | undefined;
  close(): void;
}

/** Watchers for the polling API (CreateWatcher / GetWatcherEvents / RemoveWatcher). */
export class WatcherRegistry {
  private readonly watchers = new Map<string, PolledWatcher>();

  constructor(
    private readonly users: UserDb,
    private readonly metadata: MetadataStore,
    private readonly log: Logger,
  ) {}

  create(path: string, recursive: boolean, includeEntry: boolean): string {
    const id = randomUUID();
    const entry: PolledWatcher = { events: [], failure: undefined, close: () => {} };
    const handle = startWatch({
      path,
      recursive,
      includeEntry,
      users: this.users,
      metadata: this.metadata,
      log: this.log,
      onEvent: (ev) => {
        if (entry.events.length >= MAX_EVENTS) entry.events.shift();
        entry.events.push(ev);
      },
      onError: (err) => {
        entry.failure = err;
      },
    });
    entry.close = () => handle.close();
    this.watchers.set(id, entry);
    return id;
  }

  /** Events since the last call; a failed watcher reports its error once its events are read. */
  take(id: string): FilesystemEventInit[] {
    const w = this.watchers.get(id);
    if (!w) throw notFound(`watcher with id ${id} not found`);
    const events = w.events;
    w.events = [];
    if (events.length === 0 && w.failure) {
      throw internal(`watcher failed: ${w.failure.message}`, w.failure);
    }
    return events;
  }

  remove(id: string): void {
    const w = this.watchers.get(id);
    if (!w) throw notFound(`watcher with id ${id} not found`);
    w.close();
    this.watchers.delete(id);
  }

  closeAll(): void {
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }
}
