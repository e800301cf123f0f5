import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type {
  RecordActivityRequest,
  RecordActivityResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { recordActivity as moveClocks } from "../db/queries.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";

/** Sandboxes one batch may name (a gateway flushes every second or two). */
const MAX_MARKS = 10_000;
/** A mark from the future (a gateway's clock ahead) is taken as now, at most this far ahead. */
const MAX_SKEW_MS = 5_000;

/** Moves idle clocks forward from a gateway's coalesced batch of working calls. */
export async function recordActivity(
  ctx: Context,
  req: RecordActivityRequest,
): Promise<MessageInitShape<typeof RecordActivityResponseSchema>> {
  if (req.marks.length > MAX_MARKS)
    throw new InvalidArgumentError(`at most ${MAX_MARKS} marks per call, got ${req.marks.length}`);
  const nowMs = ctx.clock.now();
  const latest = new Map<string, number>();
  for (const m of req.marks) {
    const id = requireId("marks.sandbox_id", m.sandboxId);
    if (m.at === undefined) throw new InvalidArgumentError("marks.at is required");
    const at = Math.min(timestampDate(m.at).getTime(), nowMs + MAX_SKEW_MS);
    latest.set(id, Math.max(latest.get(id) ?? 0, at));
  }
  const recorded = await moveClocks(
    ctx.db,
    [...latest].map(([sandboxId, at]) => ({ sandboxId, at: new Date(at) })),
  );
  return { recorded };
}
