import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  GetWatcherEventsRequest,
  GetWatcherEventsResponseSchema,
} from "@dnah/proto/filesystem/filesystem_pb";
import type { AgentContext } from "../context.js";

/** Events a polled watcher saw since the previous call. */
export function getWatcherEvents(ctx: AgentContext) {
  return (req: GetWatcherEventsRequest): MessageInitShape<typeof GetWatcherEventsResponseSchema> => ({
    events: ctx.watchers.take(req.watcherId),
  });
}
