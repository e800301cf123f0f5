import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  ListSandboxEventsRequest,
  ListSandboxEventsResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { listEvents, sandboxEverExisted } from "../db/queries.js";
import { InvalidArgumentError, SandboxNotFoundError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { toEventRecord } from "../records.js";

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1_000;

/** A sandbox's transitions, oldest first; a deleted sandbox's too. Unknown ids are NOT_FOUND. */
export async function listSandboxEvents(
  ctx: Context,
  req: ListSandboxEventsRequest,
): Promise<MessageInitShape<typeof ListSandboxEventsResponseSchema>> {
  const id = requireId("sandbox_id", req.sandboxId);
  if (req.limit > MAX_LIMIT) throw new InvalidArgumentError(`limit must be at most ${MAX_LIMIT}`);
  const events = await listEvents(ctx.db, id, req.limit === 0 ? DEFAULT_LIMIT : req.limit);
  if (events.length === 0 && !(await sandboxEverExisted(ctx.db, id))) throw new SandboxNotFoundError(id);
  return { events: events.map(toEventRecord) };
}
