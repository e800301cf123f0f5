import type { MessageInitShape } from "@bufbuild/protobuf";
import type { GetSandboxRequest, GetSandboxResponseSchema } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { getSandbox as selectSandbox } from "../db/queries.js";
import { SandboxNotFoundError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { toRecord } from "../records.js";

export async function getSandbox(
  ctx: Context,
  req: GetSandboxRequest,
): Promise<MessageInitShape<typeof GetSandboxResponseSchema>> {
  const id = requireId("sandbox_id", req.sandboxId);
  const row = await selectSandbox(ctx.db, id);
  if (row === undefined) throw new SandboxNotFoundError(id);
  return { sandbox: toRecord(row) };
}
