import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  GetTemplateRequest,
  GetTemplateResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { getTemplate as selectTemplate, type TemplateRow } from "../db/queries.js";
import { TemplateNotFoundError } from "../domain/errors.js";
import { isVisible } from "../domain/templates.js";
import { requireId } from "../domain/validate.js";
import { toTemplateRecord } from "../template-records.js";

export async function getTemplate(
  ctx: Context,
  req: GetTemplateRequest,
): Promise<MessageInitShape<typeof GetTemplateResponseSchema>> {
  const t = await visibleTemplate(ctx, requireId("template_id", req.templateId), req.owner);
  return { template: toTemplateRecord(t) };
}

/** A template by id or alias that `owner` may see; another key's private one is not found. */
export async function visibleTemplate(ctx: Context, idOrAlias: string, owner: string): Promise<TemplateRow> {
  const t = await selectTemplate(ctx.db, idOrAlias);
  if (t === undefined || !isVisible(t, owner)) throw new TemplateNotFoundError(idOrAlias);
  return t;
}

/** A template `owner` built (the only one who sees its builds and may change it). */
export async function ownTemplate(ctx: Context, idOrAlias: string, owner: string): Promise<TemplateRow> {
  const t = await selectTemplate(ctx.db, idOrAlias);
  if (t === undefined || owner === "" || t.owner !== owner) throw new TemplateNotFoundError(idOrAlias);
  return t;
}
