import { createHash } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  PutTemplateFilesRequest,
  PutTemplateFilesResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { putTemplateFileAlias, putTemplateFiles as storeFiles } from "../db/template-queries.js";
import { InvalidArgumentError, TooLargeError } from "../domain/errors.js";
import { checkOwner, SHA256_RE } from "../domain/templates.js";

/**
 * Stores a build context tar under the sha256 of its bytes (checked); twice is a no-op. With
 * `owner` and `alias`, also names it for that owner (see HasTemplateFiles).
 */
export async function putTemplateFiles(
  ctx: Context,
  req: PutTemplateFilesRequest,
): Promise<MessageInitShape<typeof PutTemplateFilesResponseSchema>> {
  const sha256 = checkSha256(req.sha256);
  const named = req.owner !== "" || req.alias !== "" ? checkFileAlias(req.owner, req.alias) : undefined;
  const max = ctx.cfg.templateContextMaxBytes;
  if (req.data.byteLength > max)
    throw new TooLargeError(`the build context is ${req.data.byteLength} bytes; the limit is ${max}`);
  const actual = createHash("sha256").update(req.data).digest("hex");
  if (actual !== sha256)
    throw new InvalidArgumentError(
      `sha256 mismatch: the ${req.data.byteLength} bytes sent hash to ${actual}`,
    );
  await storeFiles(ctx.db, sha256, req.data);
  if (named !== undefined) await putTemplateFileAlias(ctx.db, named.owner, named.alias, sha256);
  ctx.logger.info({ sha256, sizeBytes: req.data.byteLength }, "template build context stored");
  return {};
}

/** A context hash: 64 hex digits, upper-case accepted. */
export function checkSha256(v: string): string {
  const h = v.toLowerCase();
  if (!SHA256_RE.test(h)) throw new InvalidArgumentError("sha256 must be 64 hex digits");
  return h;
}

const FILE_ALIAS_RE = /^[\x21-\x7e]{1,128}$/;

/** An owner's name for a context tar: both given; the alias 1-128 printable ASCII characters. */
export function checkFileAlias(owner: string, alias: string): { owner: string; alias: string } {
  if (!FILE_ALIAS_RE.test(alias))
    throw new InvalidArgumentError("alias must be 1-128 printable ASCII characters (with an owner)");
  return { owner: checkOwner(owner), alias };
}
