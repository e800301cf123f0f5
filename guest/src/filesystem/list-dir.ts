import type { Dirent } from "node:fs";
import { readdir, realpath, stat } from "node:fs/promises";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type { ListDirRequest, ListDirResponseSchema } from "@dnah/proto/filesystem/filesystem_pb";
import { type AgentContext, requestUser } from "../context.js";
import { errnoOf, fsError, GuestError, invalidArgument, notFound } from "../errors.js";
import { resolvePath } from "../paths.js";
import type { NameLookup } from "../users.js";
import { type EntryInfoInit, entryInfo } from "./entry-info.js";

/** Upper bound on entries in one answer, so a deep listing of `/` cannot exhaust memory. */
const MAX_ENTRIES = 100_000;

/**
 * Entries up to `depth` levels below a directory (0 means 1), in Go's WalkDir order (lexical,
 * pre-order, symlinked directories not descended). A symlink as the root is followed; paths are
 * reported under the requested path.
 */
export function listDir(ctx: AgentContext) {
  return async (
    req: ListDirRequest,
    hctx: HandlerContext,
  ): Promise<MessageInitShape<typeof ListDirResponseSchema>> => {
    const depth = req.depth === 0 ? 1 : req.depth;
    const user = await requestUser(ctx, hctx.requestHeader);
    const requested = resolvePath(req.path, user, ctx.state.defaultWorkdir);
    let resolved: string;
    try {
      resolved = await realpath(requested);
    } catch (err) {
      if (errnoOf(err) === "ENOENT") throw notFound(`path not found: ${(err as Error).message}`, err);
      throw fsError(err, "error resolving symlink");
    }
    try {
      if (!(await stat(resolved)).isDirectory())
        throw invalidArgument(`path is not a directory: ${resolved}`);
    } catch (err) {
      if (err instanceof GuestError) throw err;
      if (errnoOf(err) === "ENOENT") throw notFound(`directory not found: ${(err as Error).message}`, err);
      throw fsError(err, "error getting file info");
    }
    const entries: EntryInfoInit[] = [];
    const realPaths: string[] = [];
    await walk(resolved, requested, 1, depth, await ctx.users.names(), entries, realPaths);
    const metadata = await ctx.metadata.read(realPaths);
    entries.forEach((e, i) => {
      e.metadata = metadata[i] ?? {};
    });
    return { entries };
  };
}

async function walk(
  dir: string,
  shownDir: string,
  level: number,
  maxDepth: number,
  names: NameLookup,
  out: EntryInfoInit[],
  realPaths: string[],
): Promise<void> {
  let children: Dirent[];
  try {
    children = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    // Vanished mid-walk: skip, as envd does for entries that no longer exist.
    if (level > 1 && errnoOf(err) === "ENOENT") return;
    throw fsError(err, `error reading directory ${dir}`);
  }
  children.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  for (const child of children) {
    if (out.length >= MAX_ENTRIES) return;
    const path = join(dir, child.name);
    let entry: EntryInfoInit;
    try {
      entry = await entryInfo(path, names, undefined);
    } catch (err) {
      if (err instanceof GuestError && err.kind === "not_found") continue;
      throw err;
    }
    entry.path = join(shownDir, child.name);
    out.push(entry);
    realPaths.push(path);
    if (level < maxDepth && child.isDirectory()) {
      await walk(path, entry.path, level + 1, maxDepth, names, out, realPaths);
    }
  }
}
