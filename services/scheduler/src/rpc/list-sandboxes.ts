import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  ListSandboxesRequest,
  ListSandboxesResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { listSandboxes as selectSandboxes } from "../db/queries.js";
import { checkStringMap } from "../domain/validate.js";
import { toRecord } from "../records.js";

export async function listSandboxes(
  ctx: Context,
  req: ListSandboxesRequest,
): Promise<MessageInitShape<typeof ListSandboxesResponseSchema>> {
  checkStringMap("metadata", req.metadata);
  const rows = await selectSandboxes(ctx.db, req.metadata);
  return { sandboxes: rows.map(toRecord) };
}
