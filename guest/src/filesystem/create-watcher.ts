import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type { CreateWatcherRequest, CreateWatcherResponseSchema } from "@dnah/proto/filesystem/filesystem_pb";
import { type AgentContext, requestUser } from "../context.js";
import { resolvePath } from "../paths.js";
import { checkWatchable } from "./watch.js";

/** Starts a polled watcher; events are collected until GetWatcherEvents takes them. */
export function createWatcher(ctx: AgentContext) {
  return async (
    req: CreateWatcherRequest,
    hctx: HandlerContext,
  ): Promise<MessageInitShape<typeof CreateWatcherResponseSchema>> => {
    const user = await requestUser(ctx, hctx.requestHeader);
    const path = resolvePath(req.path, user, ctx.state.defaultWorkdir);
    await checkWatchable(path, req.allowNetworkMounts);
    return { watcherId: ctx.watchers.create(path, req.recursive, req.includeEntry) };
  };
}
