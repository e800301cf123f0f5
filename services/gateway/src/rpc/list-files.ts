import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type FileEntry,
  FileEntrySchema,
  type ListFilesRequest,
  type ListFilesResponse,
  ListFilesResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { type EntryInfo, FileType } from "@dnah/proto/filesystem/filesystem_pb";
import { FileNotFoundError } from "../errors.js";
import { resolveSandboxPath, SANDBOX_HOME } from "../sandbox/paths.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { checkSandboxId } from "./validate.js";

const LIST_TIMEOUT_MS = 30_000;

/** ListFiles: one directory level (an empty path lists the home); missing is NOT_FOUND. */
export async function listFiles(
  deps: RpcDeps,
  req: ListFilesRequest,
  opts: CallOptions = {},
): Promise<ListFilesResponse> {
  checkSandboxId(req.sandboxId);
  const path = resolveSandboxPath(req.path === "" ? SANDBOX_HOME : req.path);
  const conn = await deps.agents.connect(req.sandboxId);
  let entries: EntryInfo[];
  try {
    const res = await conn.filesystem.listDir(
      { path, depth: 1 },
      { timeoutMs: LIST_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
    entries = res.entries;
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.NotFound)
      throw new FileNotFoundError(path, { cause: err });
    throw deps.agents.translate(req.sandboxId, err);
  }
  return create(ListFilesResponseSchema, {
    entries: entries.map(toFileEntry).filter((e): e is FileEntry => e !== undefined),
  });
}

/** Entries that are neither files, directories nor symlinks (sockets, devices) are left out. */
function toFileEntry(e: EntryInfo): FileEntry | undefined {
  // envd reports a symlink with its target's type and sets symlink_target.
  const type =
    e.symlinkTarget !== undefined
      ? "symlink"
      : e.type === FileType.FILE
        ? "file"
        : e.type === FileType.DIRECTORY
          ? "dir"
          : e.type === FileType.SYMLINK
            ? "symlink"
            : undefined;
  if (type === undefined) return undefined;
  return create(FileEntrySchema, {
    name: e.name,
    path: e.path,
    type,
    sizeBytes: e.size < 0n ? 0n : e.size,
    modifiedAt: e.modifiedTime ?? timestampFromMs(0),
  });
}
