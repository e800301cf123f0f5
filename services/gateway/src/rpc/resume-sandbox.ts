import { create } from "@bufbuild/protobuf";
import {
  type ResumeSandboxRequest,
  type ResumeSandboxResponse,
  ResumeSandboxResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { CallOptions, RpcDeps } from "./deps.js";
import { changeSandboxState } from "./sandbox-state.js";

/** ResumeSandbox: the scheduler thaws the sandbox on its host. */
export async function resumeSandbox(
  deps: RpcDeps,
  req: ResumeSandboxRequest,
  opts: CallOptions = {},
): Promise<ResumeSandboxResponse> {
  const sandbox = await changeSandboxState(deps, req.sandboxId, "resume", opts);
  return create(ResumeSandboxResponseSchema, { sandbox });
}
