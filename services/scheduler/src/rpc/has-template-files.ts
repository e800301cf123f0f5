import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  HasTemplateFilesRequest,
  HasTemplateFilesResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { storedTemplateFiles, templateFileAlias } from "../db/template-queries.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { checkFileAlias, checkSha256 } from "./put-template-files.js";

/** Whether a context tar is stored, by its sha256 or by an owner's alias (answering the sha256). */
export async function hasTemplateFiles(
  ctx: Context,
  req: HasTemplateFilesRequest,
): Promise<MessageInitShape<typeof HasTemplateFilesResponseSchema>> {
  if (req.alias !== "" || req.owner !== "") {
    if (req.sha256 !== "") throw new InvalidArgumentError("give sha256, or owner and alias, not both");
    const { owner, alias } = checkFileAlias(req.owner, req.alias);
    const sha256 = await templateFileAlias(ctx.db, owner, alias);
    return sha256 === undefined ? { present: false } : { present: true, sha256 };
  }
  const sha256 = checkSha256(req.sha256);
  return { present: (await storedTemplateFiles(ctx.db, [sha256])).has(sha256), sha256 };
}
