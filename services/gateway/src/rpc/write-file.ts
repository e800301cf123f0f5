import { create } from "@bufbuild/protobuf";
import {
  type WriteFileRequest,
  type WriteFileResponse,
  WriteFileResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { PayloadTooLargeError } from "../errors.js";
import { resolveSandboxPath } from "../sandbox/paths.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { checkSandboxId } from "./validate.js";

/** WriteFile: writes bytes through the agent's POST /files, creating parent directories. */
export async function writeFile(
  deps: RpcDeps,
  req: WriteFileRequest,
  opts: CallOptions = {},
): Promise<WriteFileResponse> {
  checkSandboxId(req.sandboxId);
  const path = resolveSandboxPath(req.path);
  if (req.content.byteLength > deps.limits.fileLimitBytes) {
    throw new PayloadTooLargeError(`file is larger than ${deps.limits.fileLimitBytes} bytes`);
  }
  const conn = await deps.agents.connect(req.sandboxId);
  let written: { path: string }[];
  try {
    written = await conn.postFile(path, req.content, opts.signal);
  } catch (err) {
    throw deps.agents.translate(req.sandboxId, err);
  }
  return create(WriteFileResponseSchema, { path: written[0]?.path ?? path });
}
