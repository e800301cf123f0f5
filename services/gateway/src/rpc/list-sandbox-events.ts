import { create } from "@bufbuild/protobuf";
import {
  type ListSandboxEventsRequest,
  type ListSandboxEventsResponse,
  ListSandboxEventsResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { InvalidArgumentError, SandboxNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSandboxEvent } from "./sandbox-view.js";
import { checkSandboxId } from "./validate.js";

/** The scheduler keeps at most this many per answer (0 = its default, 100). */
export const MAX_EVENTS_LIMIT = 1_000;

/** ListSandboxEvents: a sandbox's recorded transitions, oldest first (a deleted one's too). */
export async function listSandboxEvents(
  deps: RpcDeps,
  req: ListSandboxEventsRequest,
  opts: CallOptions = {},
): Promise<ListSandboxEventsResponse> {
  checkSandboxId(req.sandboxId);
  if (req.limit > MAX_EVENTS_LIMIT)
    throw new InvalidArgumentError(`limit: at most ${MAX_EVENTS_LIMIT}, got ${req.limit}`);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["listSandboxEvents"]>>;
  try {
    res = await deps.scheduler.listSandboxEvents(
      { sandboxId: req.sandboxId, limit: req.limit },
      { timeoutMs: SCHEDULER_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SandboxNotFoundError(req.sandboxId, { cause }));
  }
  return create(ListSandboxEventsResponseSchema, { events: res.events.map(toSandboxEvent) });
}
