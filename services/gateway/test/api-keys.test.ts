import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { migrate, silentLogger } from "@dnah/platform";
import {
  API_KEY_PREFIX,
  ApiKeyVerifier,
  createApiKey,
  ensureDevKey,
  generateApiKey,
  hashApiKey,
  revokeApiKey,
} from "../src/auth/api-keys.js";
import { freshDb, type TestDb } from "./helpers.js";

const MIGRATIONS = fileURLToPath(new URL("../src/db/migrations", import.meta.url));

describe("API keys", () => {
  let t: TestDb;
  before(async () => {
    t = await freshDb("gw_keys");
    await migrate(t.db, "gateway", MIGRATIONS);
  });
  after(() => t.drop());

  const rows = async () =>
    (await t.db.query<Record<string, unknown>>("SELECT * FROM gateway_api_keys ORDER BY created_at")).rows;

  it("are dnah_ + 40 base62 characters, all different", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const k = generateApiKey();
      assert.match(k, /^dnah_[0-9A-Za-z]{40}$/);
      seen.add(k);
    }
    assert.equal(seen.size, 200);
    assert.ok(generateApiKey().startsWith(API_KEY_PREFIX));
    assert.equal(hashApiKey("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });

  it("creates the first dev key, stores only its SHA-256, and does not create a second", async () => {
    const key = await ensureDevKey(t.db, undefined, silentLogger());
    assert.ok(key !== undefined);
    assert.match(key, /^dnah_[0-9A-Za-z]{40}$/);
    const stored = await rows();
    assert.equal(stored.length, 1);
    assert.equal(stored[0]?.key_sha256, hashApiKey(key));
    // The plain key is nowhere in the row.
    assert.ok(!JSON.stringify(stored).includes(key));
    assert.ok(!JSON.stringify(stored).includes(key.slice(API_KEY_PREFIX.length)));

    assert.equal(await ensureDevKey(t.db, undefined, silentLogger()), undefined);
    assert.equal((await rows()).length, 1);

    const v = new ApiKeyVerifier(t.db);
    assert.equal(await v.verify(key), true);
    assert.equal(await v.verify(`${key}x`), false);
    assert.equal(await v.verify(""), false);
  });

  it("accepts a fixed key, stored by hash, and is idempotent about it", async () => {
    const fixed = "fixed-dev-key-0123456789";
    assert.equal(await ensureDevKey(t.db, fixed, silentLogger()), fixed);
    assert.equal(await ensureDevKey(t.db, fixed, silentLogger()), fixed);
    const stored = await rows();
    assert.equal(stored.filter((r) => r.key_sha256 === hashApiKey(fixed)).length, 1);
    assert.ok(!JSON.stringify(stored).includes(fixed));
    assert.equal(await new ApiKeyVerifier(t.db).verify(fixed), true);
  });

  it("refuses a revoked key; a fixed key is made live again on the next start", async () => {
    const { id, key } = await createApiKey(t.db, "ci");
    const fresh = () => new ApiKeyVerifier(t.db, { ttlMs: 0, negativeTtlMs: 0 });
    assert.equal(await fresh().verify(key), true);
    assert.equal(await revokeApiKey(t.db, id), true);
    assert.equal(await revokeApiKey(t.db, id), false);
    assert.equal(await fresh().verify(key), false);

    const fixed = "another-fixed-key-abcdefgh";
    await ensureDevKey(t.db, fixed, silentLogger());
    const row = (await rows()).find((r) => r.key_sha256 === hashApiKey(fixed));
    assert.equal(await revokeApiKey(t.db, String(row?.id)), true);
    assert.equal(await fresh().verify(fixed), false);
    await ensureDevKey(t.db, fixed, silentLogger());
    assert.equal(await fresh().verify(fixed), true);
  });

  it("caches answers for their TTL only", async () => {
    let now = 1_000_000;
    const v = new ApiKeyVerifier(t.db, { ttlMs: 30_000, negativeTtlMs: 2_000, now: () => now });
    const { id, key } = await createApiKey(t.db, "cached");
    assert.equal(await v.verify(key), true);
    await revokeApiKey(t.db, id);
    now += 29_000;
    assert.equal(await v.verify(key), true, "still trusted within the TTL");
    now += 2_000;
    assert.equal(await v.verify(key), false, "revocation seen after the TTL");

    const later = generateApiKey();
    assert.equal(await v.verify(later), false);
    await t.db.query(
      "INSERT INTO gateway_api_keys (id, name, key_sha256) VALUES (gen_random_uuid(), 'l', $1)",
      [hashApiKey(later)],
    );
    assert.equal(await v.verify(later), false, "negative answer cached briefly");
    now += 2_001;
    assert.equal(await v.verify(later), true);
    v.clear();
  });

  it("keeps the cache bounded", async () => {
    const v = new ApiKeyVerifier(t.db, { maxEntries: 3 });
    for (let i = 0; i < 10; i++) await v.verify(`unknown-${i}`);
    assert.ok((v as unknown as { cache: Map<string, unknown> }).cache.size <= 3);
  });

  it("creates only one first key when several gateways start at once", async () => {
    const t2 = await freshDb("gw_keys_race");
    try {
      await migrate(t2.db, "gateway", MIGRATIONS);
      const keys = await Promise.all([1, 2, 3, 4].map(() => ensureDevKey(t2.db, undefined, silentLogger())));
      assert.equal(keys.filter((k) => k !== undefined).length, 1);
      const { rows: n } = await t2.db.query<{ n: number }>("SELECT count(*)::int AS n FROM gateway_api_keys");
      assert.equal(n[0]?.n, 1);
    } finally {
      await t2.drop();
    }
  });
});
