import type { ServiceImpl } from "@connectrpc/connect";
import type { Filesystem } from "@dnah/proto/filesystem/filesystem_pb";
import type { AgentContext } from "../context.js";
import { createWatcher } from "./create-watcher.js";
import { getWatcherEvents } from "./get-watcher-events.js";
import { listDir } from "./list-dir.js";
import { makeDir } from "./make-dir.js";
import { move } from "./move.js";
import { remove } from "./remove.js";
import { removeWatcher } from "./remove-watcher.js";
import { statEntry } from "./stat.js";
import { watchDir } from "./watch-dir.js";

/** `filesystem.Filesystem`, wire-compatible with envd 0.6.13. */
export function filesystemService(ctx: AgentContext): ServiceImpl<typeof Filesystem> {
  return {
    stat: statEntry(ctx),
    makeDir: makeDir(ctx),
    move: move(ctx),
    listDir: listDir(ctx),
    remove: remove(ctx),
    watchDir: watchDir(ctx),
    createWatcher: createWatcher(ctx),
    getWatcherEvents: getWatcherEvents(ctx),
    removeWatcher: removeWatcher(ctx),
  };
}
