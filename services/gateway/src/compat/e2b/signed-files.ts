import { createHash, timingSafeEqual } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { AccessTokens } from "./access-token.js";

/** The candidate list is read again after this long… */
const CANDIDATES_TTL_MS = 1_000;
/** …or on a miss, if it is at least this old (a sandbox created a moment ago; bounds the reads). */
const MISS_REFRESH_MS = 100;
/** Bounded work per request: at most this many sandboxes are tried (2 hashes each). */
export const MAX_CANDIDATES = 10_000;
const MAX_URL_CHARS = 16_384;

export interface SignedFileRequest {
  path: string;
  operation: "read" | "write";
  username: string;
  expiration: string | undefined;
  signature: string;
}

/**
 * A signed envd `/files` URL without a sandbox id (SDK `uploadUrl`/`downloadUrl` with
 * `E2B_SANDBOX_URL`, spec §7 and §11.1): `GET` (read) or `POST` (write) `/files?…&signature=v1_…`.
 * Undefined for anything else. Pure.
 */
export function parseSignedFileRequest(rawUrl: string, method: string): SignedFileRequest | undefined {
  if (rawUrl.length > MAX_URL_CHARS) return undefined;
  const q = rawUrl.indexOf("?");
  if ((q === -1 ? rawUrl : rawUrl.slice(0, q)) !== "/files" || q === -1) return undefined;
  const operation = method === "GET" ? "read" : method === "POST" ? "write" : undefined;
  if (operation === undefined) return undefined;
  const qs = new URLSearchParams(rawUrl.slice(q + 1));
  const signature = qs.get("signature");
  if (signature === null || !signature.startsWith("v1_")) return undefined;
  return {
    path: qs.get("path") ?? "",
    operation,
    username: qs.get("username") ?? "",
    expiration: qs.get("signature_expiration") ?? undefined,
    signature,
  };
}

/** envd's signature (the SDK's `getSignature`): `v1_` + unpadded base64(SHA-256(raw)). Pure. */
export function fileSignature(r: Omit<SignedFileRequest, "signature">, token: string): string {
  const parts = [r.path, r.operation, r.username, token];
  if (r.expiration !== undefined) parts.push(r.expiration);
  return `v1_${createHash("sha256").update(parts.join(":")).digest("base64").replace(/=+$/, "")}`;
}

/**
 * Finds the sandbox a signed `/files` URL belongs to: the one whose access token reproduces
 * the signature. Candidates (E2B sandboxes; a paused one then answers 502) are cached for about a second (read again
 * on a miss at most every 100 ms, for sandboxes created since) and tried in full, so the time
 * taken does not depend on which one matches; at most MAX_CANDIDATES are tried. The agent
 * checks the signature and its expiry again: this only routes.
 */
export class SignedFileRouter {
  private cache: { at: number; candidates: Promise<{ id: string; token: string }[]> } | undefined;

  constructor(
    private readonly opts: {
      tokens: AccessTokens;
      /** E2B sandbox ids, newest first, at most `limit`. */
      candidates: (limit: number) => Promise<string[]>;
      now?: () => number;
    },
  ) {}

  async sandboxFor(r: SignedFileRequest): Promise<string | undefined> {
    const found = this.match(r, await this.candidates());
    const stale = this.cache;
    if (found !== undefined || stale === undefined) return found;
    // A miss reads the list again, but not more often than every MISS_REFRESH_MS: a miss
    // right after a read waits for the window (a sandbox created and used within it was
    // refused before), and concurrent misses share one read.
    const wait = stale.at + MISS_REFRESH_MS - (this.opts.now ?? Date.now)();
    if (wait > 0) await sleep(wait);
    if (this.cache === stale) this.cache = undefined;
    return this.match(r, await this.candidates());
  }

  private match(
    r: SignedFileRequest,
    candidates: readonly { id: string; token: string }[],
  ): string | undefined {
    const want = Buffer.from(r.signature);
    let found: string | undefined;
    for (const c of candidates) {
      const got = Buffer.from(fileSignature(r, c.token));
      if (got.length === want.length && timingSafeEqual(got, want)) found ??= c.id;
    }
    return found;
  }

  private candidates(): Promise<{ id: string; token: string }[]> {
    const now = (this.opts.now ?? Date.now)();
    if (this.cache === undefined || now - this.cache.at >= CANDIDATES_TTL_MS) {
      const candidates = this.opts
        .candidates(MAX_CANDIDATES)
        .then((ids) => ids.map((id) => ({ id, token: this.opts.tokens.tokenFor(id) })));
      // A failed read is not cached.
      candidates.catch(() => {
        if (this.cache?.candidates === candidates) this.cache = undefined;
      });
      this.cache = { at: now, candidates };
    }
    return this.cache.candidates;
  }
}
