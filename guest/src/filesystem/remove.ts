import { rm } from "node:fs/promises";
import type { HandlerContext } from "@connectrpc/connect";
import type { RemoveRequest } from "@dnah/proto/filesystem/filesystem_pb";
import { type AgentContext, requestUser } from "../context.js";
import { fsError } from "../errors.js";
import { resolvePath } from "../paths.js";

/** `rm -rf`: a missing path is not an error. */
export function remove(ctx: AgentContext) {
  return async (req: RemoveRequest, hctx: HandlerContext): Promise<Record<string, never>> => {
    const user = await requestUser(ctx, hctx.requestHeader);
    const path = resolvePath(req.path, user, ctx.state.defaultWorkdir);
    try {
      await rm(path, { recursive: true, force: true });
    } catch (err) {
      throw fsError(err, "error removing file or directory");
    }
    return {};
  };
}
