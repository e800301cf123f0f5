import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { Db, Logger } from "@dnah/platform";
import {
  type ApiKeyRow,
  countLiveApiKeys,
  insertApiKey,
  listApiKeyRows,
  liveApiKeyIdByHash,
  lockApiKeys,
  revokeApiKeyById,
  upsertLiveApiKey,
} from "../db/queries.js";

export type { ApiKeyRow };

export const API_KEY_PREFIX = "dnah_";
const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const KEY_BODY_LENGTH = 40;

/** `dnah_` + 40 uniformly random base62 characters (~238 bits). */
export function generateApiKey(): string {
  let out = API_KEY_PREFIX;
  while (out.length < API_KEY_PREFIX.length + KEY_BODY_LENGTH) {
    for (const b of randomBytes(64)) {
      // Rejection sampling: 248 = 4 * 62, so b % 62 is uniform for b < 248.
      if (b >= 248) continue;
      out += BASE62[b % 62];
      if (out.length === API_KEY_PREFIX.length + KEY_BODY_LENGTH) break;
    }
  }
  return out;
}

/** The only form of a key that is ever stored. */
export function hashApiKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

/** Creates a key; the plain key is returned once and cannot be recovered later. */
export async function createApiKey(
  db: Pick<Db, "query">,
  name: string,
): Promise<{ id: string; key: string }> {
  const key = generateApiKey();
  const id = randomUUID();
  await insertApiKey(db, { id, name, keySha256: hashApiKey(key) });
  return { id, key };
}

/** Revokes a key by id; false when no live key has it. Verifiers notice within their TTL. */
export function revokeApiKey(db: Pick<Db, "query">, id: string): Promise<boolean> {
  return revokeApiKeyById(db, id);
}

/** Every key (id, name, created, revoked), oldest first; the plain keys are never stored. */
export function listApiKeys(db: Pick<Db, "query">): Promise<ApiKeyRow[]> {
  return listApiKeyRows(db);
}

/**
 * Makes sure the operator can call the API:
 *   - a fixed key (DNAH_API_KEY) is stored (by hash) and made live, and returned;
 *   - otherwise, when no live key exists, a new one is created and returned: this is the
 *     only moment its plain text exists;
 *   - otherwise undefined: a key exists and cannot be shown again.
 */
export async function ensureDevKey(
  db: Db,
  fixedKey: string | undefined,
  logger: Logger,
): Promise<string | undefined> {
  if (fixedKey !== undefined) {
    await upsertLiveApiKey(db, { id: randomUUID(), name: "dev (fixed)", keySha256: hashApiKey(fixedKey) });
    logger.info("API key fixed by configuration is active");
    return fixedKey;
  }
  const created = await db.transaction(async (tx) => {
    await lockApiKeys(tx);
    if ((await countLiveApiKeys(tx)) > 0) return undefined;
    return createApiKey(tx, "dev");
  });
  if (created === undefined) {
    logger.info("an API key already exists; set DNAH_API_KEY (or DNAH_API_KEY_FILE) to fix a known one");
    return undefined;
  }
  logger.info({ "apiKey.id": created.id }, "created the first API key");
  return created.key;
}

export interface ApiKeyVerifierOptions {
  /** How long a valid key is trusted without asking the database (revocation delay). */
  ttlMs?: number;
  /** How long an unknown key is remembered as unknown (spares the database from floods). */
  negativeTtlMs?: number;
  maxEntries?: number;
  now?: () => number;
}

/** Checks keys against the table through a small in-memory cache keyed by hash. */
export class ApiKeyVerifier {
  /** By key hash: the live key's id, or undefined for an unknown or revoked key. */
  private readonly cache = new Map<string, { id: string | undefined; expiresAt: number }>();
  private readonly ttlMs: number;
  private readonly negativeTtlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;

  constructor(
    private readonly db: Pick<Db, "query">,
    opts: ApiKeyVerifierOptions = {},
  ) {
    this.ttlMs = opts.ttlMs ?? 30_000;
    this.negativeTtlMs = opts.negativeTtlMs ?? 2_000;
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  async verify(key: string): Promise<boolean> {
    return (await this.identify(key)) !== undefined;
  }

  /** The id of a live key (who owns what it makes: templates), or undefined. */
  async identify(key: string): Promise<string | undefined> {
    const hash = hashApiKey(key);
    const now = this.now();
    const hit = this.cache.get(hash);
    if (hit !== undefined && hit.expiresAt > now) return hit.id;
    const id = await liveApiKeyIdByHash(this.db, hash);
    if (this.cache.size >= this.maxEntries) {
      // Map keeps insertion order: drop the oldest entry.
      const oldest = this.cache.keys().next();
      if (oldest.done !== true) this.cache.delete(oldest.value);
    }
    this.cache.delete(hash);
    this.cache.set(hash, { id, expiresAt: now + (id !== undefined ? this.ttlMs : this.negativeTtlMs) });
    return id;
  }

  /** Forgets every cached answer (after a revocation in this process, in tests). */
  clear(): void {
    this.cache.clear();
  }
}
