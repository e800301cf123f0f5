import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type ListSandboxesRequest,
  type ListSandboxesResponseSchema,
  SandboxState,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { type SandboxRowState, listSandboxes as selectSandboxes } from "../db/queries.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { checkStringMap } from "../domain/validate.js";
import { rowStateOf, toRecord } from "../records.js";

/** Users' sandboxes by metadata and, when given, state (empty: every visible state). */
export async function listSandboxes(
  ctx: Context,
  req: ListSandboxesRequest,
): Promise<MessageInitShape<typeof ListSandboxesResponseSchema>> {
  checkStringMap("metadata", req.metadata);
  const states = new Set<SandboxRowState>();
  for (const s of req.states) {
    const row = rowStateOf(s);
    if (row === undefined)
      throw new InvalidArgumentError(
        `states: ${SandboxState[s] ?? String(s)} cannot be listed; use STARTING, RUNNING, PAUSED or STOPPED`,
      );
    states.add(row);
  }
  const rows = await selectSandboxes(ctx.db, req.metadata, [...states]);
  return { sandboxes: rows.map(toRecord) };
}
