import { createHash, createHmac, timingSafeEqual } from "node:crypto";

/**
 * AWS Signature Version 4 as S3 clients sign requests (header form), pure: the gateway's
 * S3-compatible context store checks each request against the secret it handed out.
 * S3 signs the path as sent (no second encoding) and the payload hash the client declares
 * in `x-amz-content-sha256` (the store checks a PUT's body against it).
 */

export interface SigV4Auth {
  accessKey: string;
  /** yyyymmdd */
  date: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
}

const AUTH_RE =
  /^AWS4-HMAC-SHA256\s+Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/;

/** The Authorization header's parts; undefined when it is not SigV4. */
export function parseSigV4(header: string | undefined): SigV4Auth | undefined {
  const m = AUTH_RE.exec((header ?? "").trim());
  if (m === null) return undefined;
  return {
    accessKey: m[1]!,
    date: m[2]!,
    region: m[3]!,
    service: m[4]!,
    signedHeaders: m[5]!.split(";"),
    signature: m[6]!,
  };
}

export interface SignedRequest {
  method: string;
  /** The request target as received: path and query, still encoded. */
  url: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** RFC 3986 encoding, as SigV4 wants it. */
function encode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function canonicalQuery(query: string): string {
  if (query === "") return "";
  const pairs = query
    .split("&")
    .filter((p) => p !== "")
    .map((p) => {
      const eq = p.indexOf("=");
      const k = eq < 0 ? p : p.slice(0, eq);
      const v = eq < 0 ? "" : p.slice(eq + 1);
      return [encode(safeDecode(k)), encode(safeDecode(v))] as const;
    });
  pairs.sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join("&");
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replaceAll("+", "%20"));
  } catch {
    return s;
  }
}

function headerValue(v: string | string[] | undefined): string {
  const s = Array.isArray(v) ? v.join(",") : (v ?? "");
  return s.trim().replace(/\s+/g, " ");
}

/** The signature the request should carry when signed with `secret`. */
export function expectedSignature(req: SignedRequest, auth: SigV4Auth, secret: string): string {
  const q = req.url.indexOf("?");
  const path = q < 0 ? req.url : req.url.slice(0, q);
  const query = q < 0 ? "" : req.url.slice(q + 1);
  const amzDate = headerValue(req.headers["x-amz-date"]);
  const payloadHash = headerValue(req.headers["x-amz-content-sha256"]);
  const canonical = [
    req.method.toUpperCase(),
    path,
    canonicalQuery(query),
    auth.signedHeaders.map((h) => `${h}:${headerValue(req.headers[h])}\n`).join(""),
    auth.signedHeaders.join(";"),
    payloadHash,
  ].join("\n");
  const scope = `${auth.date}/${auth.region}/${auth.service}/aws4_request`;
  const toSign = [
    "AWS4-HMAC-SHA256",
    amzDate,
    scope,
    createHash("sha256").update(canonical).digest("hex"),
  ].join("\n");
  let key: Buffer = createHmac("sha256", `AWS4${secret}`).update(auth.date).digest();
  for (const part of [auth.region, auth.service, "aws4_request"])
    key = createHmac("sha256", key).update(part).digest();
  return createHmac("sha256", key).update(toSign).digest("hex");
}

/** Whether the request is signed with `secret` (`host` and the payload hash must be signed). */
export function signatureValid(req: SignedRequest, auth: SigV4Auth, secret: string): boolean {
  if (!auth.signedHeaders.includes("host") || !auth.signedHeaders.includes("x-amz-content-sha256"))
    return false;
  const want = Buffer.from(expectedSignature(req, auth, secret), "hex");
  const got = Buffer.from(auth.signature, "hex");
  return want.length === got.length && timingSafeEqual(want, got);
}

/** `x-amz-date` (yyyymmddThhmmssZ) as epoch ms; NaN when malformed. */
export function amzDateMs(v: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(v);
  if (m === null) return Number.NaN;
  return Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
}
