import type { MessageInitShape } from "@bufbuild/protobuf";
import type { DeleteTemplateRequest, DeleteTemplateResponseSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { removeTemplateImages } from "../runtime/vm/flatten.js";
import { RECIPES } from "../template/recipes.js";
import { deleteUserTemplate } from "../template/user-templates.js";

/**
 * Forgets a user template on this host, with its microVM disk images. Its layers stay in the
 * cache for other templates' builds; sandboxes running from it keep their mounts (a jail) or
 * their open disk (a microVM: a qemu VM stop-snapped then resumes no more, its disk's base gone).
 */
export async function deleteTemplate(
  ctx: VmmContext,
  req: DeleteTemplateRequest,
): Promise<MessageInitShape<typeof DeleteTemplateResponseSchema>> {
  if (RECIPES[req.templateId]) throw new InvalidArgumentError(`'${req.templateId}' is a built-in template`);
  await deleteUserTemplate(ctx.cfg.cacheDir, req.templateId);
  await removeTemplateImages(ctx.cfg.cacheDir, req.templateId);
  ctx.logger.info({ template: req.templateId }, "template deleted");
  return {};
}
