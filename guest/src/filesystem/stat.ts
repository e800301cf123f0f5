import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type { StatRequest, StatResponseSchema } from "@dnah/proto/filesystem/filesystem_pb";
import { type AgentContext, requestUser } from "../context.js";
import { resolvePath } from "../paths.js";
import { entryInfo } from "./entry-info.js";

/** EntryInfo of a path (a final symlink is not followed); missing → `not_found`. */
export function statEntry(ctx: AgentContext) {
  return async (
    req: StatRequest,
    hctx: HandlerContext,
  ): Promise<MessageInitShape<typeof StatResponseSchema>> => {
    const user = await requestUser(ctx, hctx.requestHeader);
    const path = resolvePath(req.path, user, ctx.state.defaultWorkdir);
    return { entry: await entryInfo(path, await ctx.users.names(), ctx.metadata) };
  };
}
