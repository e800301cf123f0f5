import type { RemoveWatcherRequest } from "@dnah/proto/filesystem/filesystem_pb";
import type { AgentContext } from "../context.js";

/** Stops a polled watcher; unknown id → `not_found`. */
export function removeWatcher(ctx: AgentContext) {
  return (req: RemoveWatcherRequest): Record<string, never> => {
    ctx.watchers.remove(req.watcherId);
    return {};
  };
}
