import { create } from "@bufbuild/protobuf";
import {
  type ListSandboxesRequest,
  type ListSandboxesResponse,
  ListSandboxesResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSandbox } from "./sandbox-view.js";
import { checkMetadata } from "./validate.js";

/** ListSandboxes: live sandboxes, newest first, with every given metadata pair. */
export async function listSandboxes(
  deps: RpcDeps,
  req: ListSandboxesRequest,
  opts: CallOptions = {},
): Promise<ListSandboxesResponse> {
  checkMetadata("metadata", req.metadata);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["listSandboxes"]>>;
  try {
    res = await deps.scheduler.listSandboxes(
      { metadata: req.metadata },
      { timeoutMs: SCHEDULER_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    // A list has nothing to be missing: a NOT_FOUND here is the scheduler misbehaving.
    throw fromScheduler(err, (cause) => new Error("scheduler ListSandboxes answered NOT_FOUND", { cause }));
  }
  return create(ListSandboxesResponseSchema, { sandboxes: res.sandboxes.map(toSandbox) });
}
