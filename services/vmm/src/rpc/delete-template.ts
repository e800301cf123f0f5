import type { MessageInitShape } from "@bufbuild/protobuf";
import type { DeleteTemplateRequest, DeleteTemplateResponseSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { RECIPES } from "../template/recipes.js";
import { deleteUserTemplate } from "../template/user-templates.js";

/**
 * Forgets a user template on this host. Its layers stay in the cache for other templates'
 * builds; sandboxes running from it keep their mounts.
 */
export async function deleteTemplate(
  ctx: VmmContext,
  req: DeleteTemplateRequest,
): Promise<MessageInitShape<typeof DeleteTemplateResponseSchema>> {
  if (RECIPES[req.templateId]) throw new InvalidArgumentError(`'${req.templateId}' is a built-in template`);
  await deleteUserTemplate(ctx.cfg.cacheDir, req.templateId);
  ctx.logger.info({ template: req.templateId }, "template deleted");
  return {};
}
