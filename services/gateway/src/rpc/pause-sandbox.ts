import { create } from "@bufbuild/protobuf";
import {
  type PauseSandboxRequest,
  type PauseSandboxResponse,
  PauseSandboxResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { CallOptions, RpcDeps } from "./deps.js";
import { changeSandboxState } from "./sandbox-state.js";

/** PauseSandbox: the scheduler freezes the sandbox on its host; it keeps its slot. */
export async function pauseSandbox(
  deps: RpcDeps,
  req: PauseSandboxRequest,
  opts: CallOptions = {},
): Promise<PauseSandboxResponse> {
  const sandbox = await changeSandboxState(deps, req.sandboxId, "pause", opts);
  return create(PauseSandboxResponseSchema, { sandbox });
}
