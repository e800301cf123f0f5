import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { FastifyError, FastifyInstance, FastifyRequest } from "fastify";
import type { DaytonaContext } from "../context.js";
import { organizationIdOf } from "../dto.js";
import {
  contextEtag,
  dropUpload,
  insertStorageKey,
  putContext,
  putPart,
  storageKey,
  uploadParts,
} from "./db.js";
import { amzDateMs, parseSigV4, signatureValid } from "./sigv4.js";
import { tarEntriesEnd } from "./tar.js";

/**
 * Where `Image.addLocalFile/addLocalDir` contexts go (spec-daytona-image §2): `GET
 * /api/object-storage/push-access` hands out temporary S3 credentials (one hour) bound to the
 * caller's API key, and the gateway itself serves the S3 subset the SDK uses, path-style, at
 * `/daytona-storage/{bucket}/{org}/{hash}/context.tar`: ListObjectsV2 (does the hash exist?),
 * PutObject, and multipart create / upload part / complete / abort for contexts over 5 MiB.
 * Every request must carry a valid SigV4 signature made with the handed-out secret (checked,
 * with a 15-minute clock skew), and may only touch its own organization's keys; a PUT's body
 * must hash to its signed `x-amz-content-sha256` and be a tar. Tars are kept per API key by
 * the SDK's hash (gateway_daytona_contexts) until a build joins the ones it names.
 */

export const STORAGE_PREFIX = "/daytona-storage";
const BUCKET = "daytona-builds";
const REGION = "local";
const KEY_TTL_MS = 60 * 60 * 1000;
const MAX_SKEW_MS = 15 * 60 * 1000;
/** A context tar (and a multipart upload, whole) is at most this large. */
export const MAX_CONTEXT_BYTES = 64 * 1024 * 1024;
const MAX_PARTS = 1000;
const KEY_RE = /^([0-9a-f-]{36})\/([0-9a-f]{32})\/context\.tar$/;
const EMPTY_SHA256 = createHash("sha256").digest("hex");

class S3Error extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** `GET /api/object-storage/push-access` (under the Daytona API's auth). */
export async function pushAccessRoute(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.get("/object-storage/push-access", async (req) => {
    const accessKey = `DNAH${randomBytes(10).toString("hex").toUpperCase()}`;
    const secret = randomBytes(30).toString("base64url");
    await insertStorageKey(ctx.db, {
      accessKey,
      secret,
      owner: req.daytonaOwner,
      expiresAt: new Date(Date.now() + KEY_TTL_MS),
    });
    const origin = `${req.protocol}://${req.host}`;
    return {
      accessKey,
      secret,
      sessionToken: "",
      storageUrl: `${origin}${STORAGE_PREFIX}`,
      organizationId: organizationIdOf(req.daytonaOwner),
      bucket: BUCKET,
      region: REGION,
    };
  });
}

/** The S3 subset, registered with prefix STORAGE_PREFIX (outside the Bearer-key hooks). */
export async function storageRoutes(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer", bodyLimit: MAX_CONTEXT_BYTES }, (_req, body, done) =>
    done(null, body),
  );
  app.setErrorHandler((err: FastifyError | S3Error, req, reply) => {
    let status = 500;
    let code = "InternalError";
    let message = `internal error (request id ${req.requestId})`;
    if (err instanceof S3Error) ({ status, code, message } = err);
    else if ((err as FastifyError).statusCode === 413) {
      status = 413;
      code = "EntityTooLarge";
      message = `a context is at most ${MAX_CONTEXT_BYTES} bytes`;
    } else if ((err as FastifyError).statusCode === 400) {
      status = 400;
      code = "InvalidRequest";
      message = err.message;
    } else ctx.logger.error({ err, requestId: req.requestId }, "internal error (daytona storage)");
    return reply
      .code(status)
      .type("application/xml")
      .send(errorXml(code, message, req.requestId));
  });
  app.route({
    method: ["GET", "HEAD", "PUT", "POST", "DELETE"],
    url: "/*",
    handler: async (req, reply) => {
      const owner = await authenticate(ctx, req);
      const org = organizationIdOf(owner);
      const q = new URLSearchParams(req.url.split("?")[1] ?? "");
      const path = decodeURIComponent((req.url.split("?", 1)[0] ?? "").slice(STORAGE_PREFIX.length + 1));
      const slash = path.indexOf("/");
      const bucket = slash < 0 ? path : path.slice(0, slash);
      const key = slash < 0 ? "" : path.slice(slash + 1);
      if (bucket !== BUCKET) throw new S3Error(404, "NoSuchBucket", `no bucket ${bucket.slice(0, 64)}`);

      if (key === "" && req.method === "GET" && q.get("list-type") === "2") {
        const prefix = q.get("prefix") ?? "";
        const m = /^([0-9a-f-]{36})\/([0-9a-f]{32})\/?$/.exec(prefix);
        if (m !== null && m[1] !== org) throw accessDenied();
        const found = m === null ? undefined : await contextEtag(ctx.db, owner, m[2]!);
        const maxKeys = Number(q.get("max-keys") ?? 1000);
        const contents =
          found === undefined
            ? ""
            : `<Contents><Key>${m![1]}/${m![2]}/context.tar</Key><LastModified>${new Date(found.created_at).toISOString()}</LastModified><ETag>&quot;${found.etag}&quot;</ETag><Size>${found.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`;
        return reply
          .type("application/xml")
          .send(
            `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>${BUCKET}</Name><Prefix>${escapeXml(prefix)}</Prefix><KeyCount>${found === undefined ? 0 : 1}</KeyCount><MaxKeys>${maxKeys}</MaxKeys><IsTruncated>false</IsTruncated>${contents}</ListBucketResult>`,
          );
      }

      const km = KEY_RE.exec(key);
      if (km === null)
        throw new S3Error(400, "InvalidArgument", "keys are <organizationId>/<md5>/context.tar");
      if (km[1] !== org) throw accessDenied();
      const hash = km[2]!;
      const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const uploadId = q.get("uploadId");

      if (req.method === "POST" && q.has("uploads")) {
        const id = randomUUID();
        return reply
          .type("application/xml")
          .send(
            `<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${BUCKET}</Bucket><Key>${escapeXml(key)}</Key><UploadId>${id}</UploadId></InitiateMultipartUploadResult>`,
          );
      }
      if (req.method === "PUT" && uploadId !== null) {
        const partNumber = Number(q.get("partNumber"));
        if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > MAX_PARTS)
          throw new S3Error(400, "InvalidArgument", `partNumber must be 1 to ${MAX_PARTS}`);
        checkPayload(req, body);
        await putPart(ctx.db, { uploadId, owner, hash, partNumber, data: body });
        return reply.header("etag", `"${md5(body)}"`).send();
      }
      if (req.method === "POST" && uploadId !== null) {
        const parts = await uploadParts(ctx.db, uploadId, owner, hash);
        if (parts.length === 0) throw new S3Error(404, "NoSuchUpload", "no such upload");
        const data = Buffer.concat(parts.map((p) => p.data));
        if (data.length > MAX_CONTEXT_BYTES)
          throw new S3Error(400, "EntityTooLarge", `a context is at most ${MAX_CONTEXT_BYTES} bytes`);
        const etag = await store(ctx, owner, hash, data);
        await dropUpload(ctx.db, uploadId, owner);
        return reply
          .type("application/xml")
          .send(
            `<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Location>${escapeXml(key)}</Location><Bucket>${BUCKET}</Bucket><Key>${escapeXml(key)}</Key><ETag>&quot;${etag}&quot;</ETag></CompleteMultipartUploadResult>`,
          );
      }
      if (req.method === "DELETE" && uploadId !== null) {
        await dropUpload(ctx.db, uploadId, owner);
        return reply.code(204).send();
      }
      if (req.method === "PUT") {
        checkPayload(req, body);
        const etag = await store(ctx, owner, hash, body);
        return reply.header("etag", `"${etag}"`).send();
      }
      if (req.method === "HEAD" || req.method === "GET") {
        const found = await contextEtag(ctx.db, owner, hash);
        if (found === undefined) throw new S3Error(404, "NoSuchKey", "no such key");
        // Contents are for builds only: a HEAD tells the size and ETag.
        if (req.method === "GET") throw new S3Error(403, "AccessDenied", "contexts cannot be read back");
        return reply.header("etag", `"${found.etag}"`).header("content-length", String(found.size)).send();
      }
      throw new S3Error(405, "MethodNotAllowed", `${req.method} is not supported here`);
    },
  });
}

async function store(ctx: DaytonaContext, owner: string, hash: string, data: Buffer): Promise<string> {
  try {
    tarEntriesEnd(data);
  } catch (err) {
    throw new S3Error(400, "InvalidArgument", (err as Error).message);
  }
  const etag = md5(data);
  await putContext(ctx.db, owner, hash, data, etag);
  ctx.logger.info({ hash, sizeBytes: data.length }, "daytona build context stored");
  return etag;
}

/** The owner (API key hash) of a correctly signed request with a live storage key. */
async function authenticate(ctx: DaytonaContext, req: FastifyRequest): Promise<string> {
  const auth = parseSigV4(one(req.headers.authorization));
  if (auth === undefined)
    throw new S3Error(
      403,
      "AccessDenied",
      "sign requests with the credentials from /api/object-storage/push-access",
    );
  const key = await storageKey(ctx.db, auth.accessKey);
  if (key === undefined) throw new S3Error(403, "InvalidAccessKeyId", "unknown or expired access key");
  const at = amzDateMs(one(req.headers["x-amz-date"]) ?? "");
  if (!(Math.abs(Date.now() - at) <= MAX_SKEW_MS))
    throw new S3Error(403, "RequestTimeTooSkewed", "x-amz-date is missing or too far from the server's time");
  if (!signatureValid({ method: req.method, url: req.url, headers: req.headers }, auth, key.secret))
    throw new S3Error(403, "SignatureDoesNotMatch", "the request signature does not match");
  return key.owner_sha256;
}

/** A signed payload hash must be the body's (an unsigned payload is accepted as such). */
function checkPayload(req: FastifyRequest, body: Buffer): void {
  const declared = one(req.headers["x-amz-content-sha256"]) ?? "";
  if (declared === "UNSIGNED-PAYLOAD") return;
  const actual = body.length === 0 ? EMPTY_SHA256 : createHash("sha256").update(body).digest("hex");
  if (declared !== actual)
    throw new S3Error(400, "XAmzContentSHA256Mismatch", "the body does not hash to x-amz-content-sha256");
}

function accessDenied(): S3Error {
  return new S3Error(403, "AccessDenied", "these credentials are for another organization's keys");
}

function md5(b: Buffer): string {
  return createHash("md5").update(b).digest("hex");
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function errorXml(code: string, message: string, requestId: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${escapeXml(message)}</Message><RequestId>${escapeXml(requestId)}</RequestId></Error>`;
}
