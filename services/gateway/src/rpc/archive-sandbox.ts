import { create } from "@bufbuild/protobuf";
import {
  type ArchiveSandboxRequest,
  type ArchiveSandboxResponse,
  ArchiveSandboxResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { CallOptions, RpcDeps } from "./deps.js";
import { changeSandboxState } from "./sandbox-state.js";

/** ArchiveSandbox: a paused sandbox's state goes to archive storage; it leaves its host. */
export async function archiveSandbox(
  deps: RpcDeps,
  req: ArchiveSandboxRequest,
  opts: CallOptions = {},
): Promise<ArchiveSandboxResponse> {
  const sandbox = await changeSandboxState(deps, req.sandboxId, "archive", opts);
  return create(ArchiveSandboxResponseSchema, { sandbox });
}
