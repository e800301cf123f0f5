import type { Stats } from "node:fs";
import { stat } from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type { MakeDirRequest, MakeDirResponseSchema } from "@dnah/proto/filesystem/filesystem_pb";
import { type AgentContext, requestUser } from "../context.js";
import { alreadyExists, errnoOf, fsError, invalidArgument } from "../errors.js";
import { resolvePath } from "../paths.js";
import { ensureDirs, ownerOf } from "./ensure-dirs.js";
import { entryInfo } from "./entry-info.js";

/** `mkdir -p`, owned by the user. Existing directory → `already_exists`; existing file → `invalid_argument`. */
export function makeDir(ctx: AgentContext) {
  return async (
    req: MakeDirRequest,
    hctx: HandlerContext,
  ): Promise<MessageInitShape<typeof MakeDirResponseSchema>> => {
    const user = await requestUser(ctx, hctx.requestHeader);
    const path = resolvePath(req.path, user, ctx.state.defaultWorkdir);
    let existing: Stats | undefined;
    try {
      existing = await stat(path);
    } catch (err) {
      if (errnoOf(err) !== "ENOENT") throw fsError(err, "error getting file info");
    }
    if (existing?.isDirectory()) throw alreadyExists(`directory already exists: ${path}`);
    if (existing) throw invalidArgument(`path already exists but it is not a directory: ${path}`);
    await ensureDirs(path, ownerOf(user, ctx.users.privileged));
    return { entry: await entryInfo(path, await ctx.users.names(), ctx.metadata) };
  };
}
