import { create } from "@bufbuild/protobuf";
import {
  type ListSandboxesRequest,
  type ListSandboxesResponse,
  ListSandboxesResponseSchema,
  SandboxState,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { SandboxState as SchedulerSandboxState } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { InvalidArgumentError } from "../errors.js";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSandbox, toSchedulerState } from "./sandbox-view.js";
import { checkMetadata } from "./validate.js";

/**
 * ListSandboxes: live sandboxes, newest first, with every given metadata pair, in one of the
 * given states (none given: every live state).
 */
export async function listSandboxes(
  deps: RpcDeps,
  req: ListSandboxesRequest,
  opts: CallOptions = {},
): Promise<ListSandboxesResponse> {
  checkMetadata("metadata", req.metadata);
  const states = new Set<SchedulerSandboxState>();
  for (const s of req.states) {
    const mapped = toSchedulerState(s);
    if (mapped === undefined)
      throw new InvalidArgumentError(
        `states: ${SandboxState[s] ?? String(s)} cannot be listed; use STARTING, RUNNING, PAUSED, STOPPED or ARCHIVED`,
      );
    states.add(mapped);
  }
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["listSandboxes"]>>;
  try {
    res = await deps.scheduler.listSandboxes(
      { metadata: req.metadata, states: [...states] },
      { timeoutMs: SCHEDULER_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    // A list has nothing to be missing: a NOT_FOUND here is the scheduler misbehaving.
    throw fromScheduler(err, (cause) => new Error("scheduler ListSandboxes answered NOT_FOUND", { cause }));
  }
  return create(ListSandboxesResponseSchema, { sandboxes: res.sandboxes.map(toSandbox) });
}
