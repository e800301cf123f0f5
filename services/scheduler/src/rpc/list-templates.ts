import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  ListTemplatesRequest,
  ListTemplatesResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { listVisibleTemplates } from "../db/template-queries.js";
import { toTemplateRecord } from "../template-records.js";

/** Public templates, the installation's and the caller's own. */
export async function listTemplates(
  ctx: Context,
  req: ListTemplatesRequest,
): Promise<MessageInitShape<typeof ListTemplatesResponseSchema>> {
  return { templates: (await listVisibleTemplates(ctx.db, req.owner)).map(toTemplateRecord) };
}
