import { createHash } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError, PermissionDeniedError, TemplateNotFoundError } from "../../../errors.js";
import { getTemplate } from "../../../rpc/get-template.js";
import { templateFilesByAlias } from "../../../rpc/has-template-files.js";
import { putTemplateFiles } from "../../../rpc/put-template-files.js";
import type { E2bContext } from "../context.js";
import { checkUpload, UPLOAD_URL_TTL_S, uploadQuery } from "../template-upload-token.js";

declare module "fastify" {
  interface FastifyContextConfig {
    /** An E2B route authorised by a signature in its URL, not an API key (template uploads). */
    e2bSigned?: boolean;
  }
}

/** E2B's files hash: hex SHA-256 (of the SDK's own recipe, not of the tar's bytes). */
const FILES_HASH_RE = /^[0-9a-f]{64}$/;

/**
 * A COPY step's files (SDK `Template.build`):
 *
 *   GET /templates/{templateID}/files/{hash}   → 201 {present: true} when this key uploaded
 *       them already, else {present: false, url} — an absolute URL on this gateway, signed for
 *       (key, template, hash) and valid for an hour: the SDK's PUT carries no API key.
 *   PUT /templates/{templateID}/files/{hash}?owner&expires&signature   body: the tar (gzip or
 *       plain) → 201; 403 for a missing, wrong or expired signature; 413 over the limit.
 *
 * The tar is stored under the sha256 of its bytes, named `hash` for that key only.
 */
export async function templateFileRoutes(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  app.get<{ Params: { templateId: string; hash: string } }>(
    "/templates/:templateId/files/:hash",
    { config: { e2bApi: true } },
    async (req, reply) => {
      const { templateId, hash } = req.params;
      if (!FILES_HASH_RE.test(hash)) throw new InvalidArgumentError("the files hash must be 64 hex digits");
      const owner = req.apiKeyId;
      const t = await getTemplate(ctx.deps, templateId, { owner });
      if (t.owner !== owner) throw new TemplateNotFoundError(templateId);
      if ((await templateFilesByAlias(ctx.deps, hash, { owner })) !== undefined)
        return reply.code(201).send({ present: true });
      const expires = Math.floor(Date.now() / 1000) + UPLOAD_URL_TTL_S;
      const q = uploadQuery(ctx.tokens, { owner, templateId: t.templateId, filesHash: hash, expires });
      const url = `${req.protocol}://${req.host}/templates/${encodeURIComponent(t.templateId)}/files/${hash}?${q}`;
      return reply.code(201).send({ present: false, url });
    },
  );

  await app.register(async (put) => {
    // The tar is read here, as it arrives, hashed on the way.
    put.removeAllContentTypeParsers();
    put.addContentTypeParser("*", (_req, _payload, done) => done(null, undefined));
    put.put<{
      Params: { templateId: string; hash: string };
      Querystring: { owner?: string; expires?: string; signature?: string };
    }>(
      "/templates/:templateId/files/:hash",
      { config: { e2bApi: true, e2bSigned: true } },
      async (req, reply) => {
        const { templateId, hash } = req.params;
        const why = checkUpload(ctx.tokens, req.query, templateId, hash, Math.floor(Date.now() / 1000));
        if (why !== undefined) {
          reply.header("connection", "close");
          throw new PermissionDeniedError(why);
        }
        const owner = req.query.owner!;
        const max = ctx.templateContextMaxBytes;
        // Object storage's answer, not the control API's (its table maps a large body to 400).
        // The rest of the body is not read: the connection goes once this answer is sent.
        const tooLarge = () =>
          reply
            .code(413)
            .header("connection", "close")
            .type("application/json")
            .send({ code: 413, message: `the files are larger than ${max} bytes` });
        if (Number(req.headers["content-length"] ?? 0) > max) return tooLarge();
        const sha = createHash("sha256");
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of req.raw as AsyncIterable<Buffer>) {
          size += chunk.length;
          if (size > max) return tooLarge();
          sha.update(chunk);
          chunks.push(chunk);
        }
        if (size === 0) throw new InvalidArgumentError("the upload is empty");
        await putTemplateFiles(ctx.deps, sha.digest("hex"), Buffer.concat(chunks, size), { owner }, hash);
        return reply.code(201).header("content-length", "0").send();
      },
    );
  });
}
