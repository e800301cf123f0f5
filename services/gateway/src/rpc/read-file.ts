import type { IncomingMessage } from "node:http";
import { create } from "@bufbuild/protobuf";
import {
  type ReadFileRequest,
  type ReadFileResponse,
  ReadFileResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { PayloadTooLargeError } from "../errors.js";
import { resolveSandboxPath } from "../sandbox/paths.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { checkSandboxId } from "./validate.js";

export interface OpenedFile {
  path: string;
  /** The agent's response body: the file's bytes, to be streamed or drained. */
  body: IncomingMessage;
  /** From the agent's Content-Length, when it sent one. */
  sizeBytes: number | undefined;
}

/** Opens a file for streaming (the REST route pipes it through, any size). */
export async function openFile(
  deps: RpcDeps,
  req: ReadFileRequest,
  opts: CallOptions = {},
): Promise<OpenedFile> {
  checkSandboxId(req.sandboxId);
  const path = resolveSandboxPath(req.path);
  const conn = await deps.agents.connect(req.sandboxId);
  let body: IncomingMessage;
  try {
    body = await conn.getFile(path, opts.signal);
  } catch (err) {
    throw deps.agents.translate(req.sandboxId, err);
  }
  const len = Number(body.headers["content-length"]);
  return { path, body, sizeBytes: Number.isSafeInteger(len) && len >= 0 ? len : undefined };
}

/** ReadFile: the whole file in one message, up to `fileLimitBytes` (Connect surface). */
export async function readFile(
  deps: RpcDeps,
  req: ReadFileRequest,
  opts: CallOptions = {},
): Promise<ReadFileResponse> {
  const file = await openFile(deps, req, opts);
  const limit = deps.limits.fileLimitBytes;
  const tooLarge = () =>
    new PayloadTooLargeError(`file is larger than ${limit} bytes; read it with GET /v1/sandboxes/{id}/files`);
  if (file.sizeBytes !== undefined && file.sizeBytes > limit) {
    file.body.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of file.body as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > limit) throw tooLarge();
      chunks.push(c);
    }
  } catch (err) {
    file.body.destroy();
    throw deps.agents.translate(req.sandboxId, err);
  }
  return create(ReadFileResponseSchema, { content: Buffer.concat(chunks) });
}
