import { timingSafeEqual } from "node:crypto";
import type { AccessTokens } from "./access-token.js";

/**
 * The URL the SDK PUTs a COPY step's tar to carries its own authority (the SDK sends no API
 * key there): a MAC over (owner, template id, files hash, expiry) under the installation's E2B
 * secret. It allows that one upload, for that key and template, until it expires.
 */
const DOMAIN = "template-upload/v1";
export const UPLOAD_URL_TTL_S = 3600;

export interface UploadGrant {
  owner: string;
  templateId: string;
  filesHash: string;
  /** Unix seconds. */
  expires: number;
}

export function uploadQuery(tokens: AccessTokens, g: UploadGrant): string {
  const sig = tokens.mac(DOMAIN, [g.owner, g.templateId, g.filesHash, String(g.expires)]);
  return new URLSearchParams({ owner: g.owner, expires: String(g.expires), signature: sig }).toString();
}

/** Why a signed upload is refused, or undefined when it is allowed. */
export function checkUpload(
  tokens: AccessTokens,
  q: { owner?: string | undefined; expires?: string | undefined; signature?: string | undefined },
  templateId: string,
  filesHash: string,
  nowS: number,
): string | undefined {
  if (!q.owner || !q.expires || !q.signature) return "the upload URL is not signed";
  if (!/^\d{1,12}$/.test(q.expires)) return "the upload URL is not signed";
  const want = Buffer.from(tokens.mac(DOMAIN, [q.owner, templateId, filesHash, q.expires]));
  const got = Buffer.from(q.signature);
  if (want.length !== got.length || !timingSafeEqual(want, got))
    return "the upload URL's signature is invalid";
  if (Number(q.expires) < nowS) return "the upload URL has expired; ask for a new one";
  return undefined;
}
