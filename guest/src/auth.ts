import { createHash, timingSafeEqual } from "node:crypto";

export const ACCESS_TOKEN_HEADER = "x-access-token";

export const UNAUTHORIZED_MESSAGE =
  "unauthorized access, please provide a valid access token or method signing if supported";

/** Routes envd serves without `X-Access-Token` (`/files` checks its own token or signature). */
const EXEMPT = new Set(["GET /health", "GET /files", "POST /files", "POST /init"]);

export function isTokenExempt(method: string, pathname: string): boolean {
  return EXEMPT.has(`${method} ${pathname}`);
}

export function tokenMatches(expected: string, given: string | null | undefined): boolean {
  if (given === null || given === undefined) return false;
  return safeEqual(expected, given);
}

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

/** The user named by `Authorization: Basic base64("<name>:")`, or undefined if absent/malformed. */
export function basicAuthUser(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^basic\s+(\S+)\s*$/i.exec(header);
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  return decoded.slice(0, colon);
}

export type FileOperation = "read" | "write";

/**
 * envd's signed `/files` URLs: `"v1_" + base64(sha256("path:op:user:token[:expiration]"))`,
 * unpadded. `user` is `""` when the URL names none.
 */
export function fileSignature(
  path: string,
  operation: FileOperation,
  user: string,
  token: string,
  expiration: number | undefined,
): string {
  const parts = [path, operation, user, token];
  if (expiration !== undefined) parts.push(String(expiration));
  return `v1_${createHash("sha256").update(parts.join(":")).digest("base64").replace(/=+$/, "")}`;
}

export interface FileAuthInput {
  token: string | undefined;
  headerToken: string | null | undefined;
  signature: string | null;
  signatureExpiration: string | null;
  path: string;
  username: string | null;
  operation: FileOperation;
  nowMs: number;
}

/** Checks `/files` access: undefined when allowed, else the reason (sent with a 401). */
export function checkFileAccess(input: FileAuthInput): string | undefined {
  if (input.token === undefined) return undefined;
  if (input.headerToken !== null && input.headerToken !== undefined && input.headerToken !== "") {
    return tokenMatches(input.token, input.headerToken)
      ? undefined
      : "access token present in header but does not match";
  }
  if (input.signature === null) return "missing signature query parameter";
  let expiration: number | undefined;
  if (input.signatureExpiration !== null) {
    expiration = Number(input.signatureExpiration);
    if (!Number.isSafeInteger(expiration)) return "invalid signature";
  }
  const expected = fileSignature(input.path, input.operation, input.username ?? "", input.token, expiration);
  if (!safeEqual(expected, input.signature)) return "invalid signature";
  if (expiration !== undefined && expiration < Math.floor(input.nowMs / 1000))
    return "signature is already expired";
  return undefined;
}
