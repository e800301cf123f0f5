import { rename } from "node:fs/promises";
import { dirname } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type { MoveRequest, MoveResponseSchema } from "@dnah/proto/filesystem/filesystem_pb";
import { type AgentContext, requestUser } from "../context.js";
import { errnoOf, fsError, notFound } from "../errors.js";
import { resolvePath } from "../paths.js";
import { ensureDirs, ownerOf } from "./ensure-dirs.js";
import { entryInfo } from "./entry-info.js";

/** Renames, creating the destination's parents; missing source → `not_found`. */
export function move(ctx: AgentContext) {
  return async (
    req: MoveRequest,
    hctx: HandlerContext,
  ): Promise<MessageInitShape<typeof MoveResponseSchema>> => {
    const user = await requestUser(ctx, hctx.requestHeader);
    const source = resolvePath(req.source, user, ctx.state.defaultWorkdir);
    const destination = resolvePath(req.destination, user, ctx.state.defaultWorkdir);
    await ensureDirs(dirname(destination), ownerOf(user, ctx.users.privileged));
    try {
      await rename(source, destination);
    } catch (err) {
      if (errnoOf(err) === "ENOENT") throw notFound(`source file not found: ${(err as Error).message}`, err);
      throw fsError(err, "error renaming");
    }
    return { entry: await entryInfo(destination, await ctx.users.names(), ctx.metadata) };
  };
}
