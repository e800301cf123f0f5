import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  GetTemplateRequest,
  GetTemplateResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { getTemplate as selectTemplate } from "../db/queries.js";
import { TemplateNotFoundError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";

export async function getTemplate(
  ctx: Context,
  req: GetTemplateRequest,
): Promise<MessageInitShape<typeof GetTemplateResponseSchema>> {
  const id = requireId("template_id", req.templateId);
  const t = await selectTemplate(ctx.db, id);
  if (t === undefined) throw new TemplateNotFoundError(id);
  return {
    template: {
      templateId: t.id,
      aliases: t.aliases,
      cpuCount: t.cpuCount,
      memoryMib: t.memoryMib,
      poolTargetSize: t.poolTarget,
    },
  };
}
