import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { silentLogger } from "@dnah/platform";
import { generateKey, verify } from "../src/crypto/ed25519.js";
import { FailedPreconditionError, KeyNotFoundError, KeyStoreError } from "../src/domain/errors.js";
import { kidForPublicKey, openKeyStore } from "../src/keys/store.js";

const logger = silentLogger();

describe("key store", () => {
  let dir: string;
  let tick: number;
  // A clock that advances one second per key, so "newest" is unambiguous.
  const now = () => new Date(Date.UTC(2026, 0, 1) + tick++ * 1000);

  beforeEach(async () => {
    dir = join(await mkdtemp(join(tmpdir(), "dnah-keys-")), "keys");
    tick = 0;
  });
  afterEach(async () => {
    await rm(join(dir, ".."), { recursive: true, force: true });
  });

  const open = () => openKeyStore(dir, { logger, now });

  it("creates the directory and a first active key", async () => {
    const store = await open();
    const [only, ...rest] = store.list();
    assert.equal(rest.length, 0);
    assert.ok(only?.active);
    assert.equal(only.kid, kidForPublicKey(only.publicKey));
    assert.equal(store.activeKid(), only.kid);
    assert.equal((await readFile(join(dir, "active"), "utf8")).trim(), only.kid);
    const file = JSON.parse(await readFile(join(dir, `${only.kid}.json`), "utf8"));
    assert.equal(file.createdAt, "2026-01-01T00:00:00.000Z");
    assert.equal(file.publicKey, Buffer.from(only.publicKey).toString("base64"));
  });

  it("signs with the active key and exposes only public keys", async () => {
    const store = await open();
    const msg = new TextEncoder().encode("m");
    const asked: string[] = [];
    const { kid, signature } = store.sign((k) => {
      asked.push(k);
      return msg;
    });
    assert.equal(kid, store.activeKid());
    assert.deepEqual(asked, [kid]);
    assert.ok(verify(signature, msg, store.get(kid)!.publicKey));
    assert.equal(store.get("0000000000000000"), undefined);
    for (const k of store.list())
      assert.deepEqual(Object.keys(k).sort(), ["active", "createdAt", "kid", "publicKey", "retiredAt"]);
  });

  it("rotates and reloads the same keys and active kid", async () => {
    const store = await open();
    const first = store.activeKid();
    const second = await store.rotate();
    assert.notEqual(second, first);
    assert.equal(store.activeKid(), second);
    await store.close();
    const reopened = await open();
    assert.equal(reopened.activeKid(), second);
    assert.deepEqual(
      reopened.list().map((k) => [k.kid, k.active]),
      [
        [first, false],
        [second, true],
      ],
    );
  });

  it("retires a key: kept and listed with its time, persisted across a reopen", async () => {
    const store = await open();
    const old = store.activeKid();
    const current = await store.rotate();
    const at = await store.retire(old);
    assert.equal(at.toISOString(), "2026-01-01T00:00:02.000Z");
    const check = (s: typeof store) => {
      assert.deepEqual(
        s.list().map((k) => [k.kid, k.active, k.retiredAt?.toISOString()]),
        [
          [old, false, "2026-01-01T00:00:02.000Z"],
          [current, true, undefined],
        ],
      );
      assert.equal(s.get(old)?.retiredAt?.toISOString(), "2026-01-01T00:00:02.000Z");
    };
    check(store);
    // Kept, not deleted; the key file itself is never rewritten.
    assert.ok((await readdir(dir)).includes(`${old}.json`));
    assert.equal((await readFile(join(dir, `${old}.retired`), "utf8")).trim(), "2026-01-01T00:00:02.000Z");
    assert.equal((await stat(join(dir, `${old}.retired`))).mode & 0o777, 0o600);
    await store.close();
    check(await open());
  });

  it("retiring twice keeps the first time", async () => {
    const store = await open();
    const old = store.activeKid();
    await store.rotate();
    const first = await store.retire(old);
    const second = await store.retire(old);
    assert.equal(second.getTime(), first.getTime());
  });

  it("refuses to retire the active key or an unknown kid", async () => {
    const store = await open();
    await assert.rejects(store.retire(store.activeKid()), (e: unknown) => {
      assert.ok(e instanceof FailedPreconditionError);
      assert.match(e.message, /rotate first/);
      return true;
    });
    await assert.rejects(store.retire("0000000000000000"), KeyNotFoundError);
    assert.equal(store.list()[0]?.retiredAt, undefined);
  });

  it("serialises a retirement behind a rotation in progress", async () => {
    const store = await open();
    const old = store.activeKid();
    // Started together: the retirement sees the rotation's outcome, so `old` is no longer active.
    const [, at] = await Promise.all([store.rotate(), store.retire(old)]);
    assert.ok(at instanceof Date);
    assert.notEqual(store.activeKid(), old);
  });

  it("refuses an active file naming a retired key", async () => {
    const store = await open();
    const old = store.activeKid();
    await store.rotate();
    await store.retire(old);
    await writeFile(join(dir, "active"), `${old}\n`);
    await assert.rejects(open(), /which is retired/);
  });

  it("picks the newest key that is not retired when the active file is missing", async () => {
    const store = await open();
    const first = store.activeKid();
    const second = await store.rotate();
    await store.rotate();
    // Hand-edit: retire `third` behind the store's back, then drop `active`.
    const third = store.activeKid();
    await writeFile(join(dir, `${third}.retired`), "2026-01-01T00:00:09.000Z\n", { mode: 0o600 });
    await rm(join(dir, "active"));
    const reopened = await open();
    assert.equal(reopened.activeKid(), second);
    assert.notEqual(reopened.activeKid(), first);
  });

  it("refuses a garbled retirement file, and ignores one whose key is gone", async () => {
    const store = await open();
    const old = store.activeKid();
    await store.rotate();
    await writeFile(join(dir, `${old}.retired`), "soon\n", { mode: 0o600 });
    await assert.rejects(open(), /\.retired does not hold an ISO 8601 time/);
    await rm(join(dir, `${old}.retired`));
    await writeFile(join(dir, "fedcba9876543210.retired"), "2026-01-01T00:00:00.000Z\n", { mode: 0o600 });
    assert.equal((await open()).list().length, 2);
  });

  it("makes the newest key active when the active file is missing", async () => {
    const store = await open();
    const newest = await store.rotate();
    await rm(join(dir, "active"));
    assert.equal((await open()).activeKid(), newest);
    assert.equal((await readFile(join(dir, "active"), "utf8")).trim(), newest);
  });

  it("refuses an active file naming a key that is not there", async () => {
    const store = await open();
    const active = await store.rotate();
    await rm(join(dir, `${active}.json`));
    await assert.rejects(
      open(),
      (err: unknown) => err instanceof KeyStoreError && err.message.includes(active),
    );
  });

  it("refuses an active file when no key is left", async () => {
    const store = await open();
    await rm(join(dir, `${store.activeKid()}.json`));
    await assert.rejects(open(), /holds no keys/);
  });

  it("refuses a garbled active file", async () => {
    await open();
    await writeFile(join(dir, "active"), "../../etc/passwd\n");
    await assert.rejects(open(), KeyStoreError);
  });

  for (const [what, edit] of [
    [
      "a private key that does not match",
      (f: Record<string, string>) => ({ ...f, privateKey: b64(generateKey().secretKey) }),
    ],
    [
      "a kid not derived from the public key",
      (f: Record<string, string>) => ({ ...f, publicKey: b64(generateKey().publicKey) }),
    ],
    ["a short private key", (f: Record<string, string>) => ({ ...f, privateKey: b64(new Uint8Array(31)) })],
    ["a bad createdAt", (f: Record<string, string>) => ({ ...f, createdAt: "yesterday" })],
  ] as const) {
    it(`refuses a key file with ${what}, without quoting it`, async () => {
      const kid = (await open()).activeKid();
      const path = join(dir, `${kid}.json`);
      const original = JSON.parse(await readFile(path, "utf8")) as Record<string, string>;
      await writeFile(path, JSON.stringify(edit(original)));
      const err = await open().then(
        () => assert.fail("opened"),
        (e: unknown) => e as Error,
      );
      assert.ok(err instanceof KeyStoreError, String(err));
      assert.ok(err.message.includes(path));
      assert.ok(!err.message.includes(original.privateKey!));
    });
  }

  it("tightens loose permissions on the directory and key files", async () => {
    const kid = (await open()).activeKid();
    await chmod(dir, 0o755);
    await chmod(join(dir, `${kid}.json`), 0o644);
    await open();
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.equal((await stat(join(dir, `${kid}.json`))).mode & 0o777, 0o600);
  });

  it("removes temporary files left by a crash and ignores unrelated files", async () => {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(join(dir, ".0123456789abcdef.json.0123456789ab.tmp"), "{}", { mode: 0o600 });
    await writeFile(join(dir, ".active.0123456789ab.tmp"), "{}", { mode: 0o600 });
    await writeFile(join(dir, ".0123456789abcdef.retired.0123456789ab.tmp"), "x", { mode: 0o600 });
    await writeFile(join(dir, "README"), "notes", { mode: 0o600 });
    await writeFile(join(dir, ".notes.tmp"), "mine", { mode: 0o600 });
    const store = await open();
    assert.equal(store.list().length, 1);
    assert.deepEqual(
      (await readdir(dir)).sort(),
      [".notes.tmp", "README", "active", `${store.activeKid()}.json`].sort(),
    );
  });

  it("writes files 0600 even under a permissive umask", async () => {
    const old = process.umask(0o000);
    try {
      const store = await open();
      const old = store.activeKid();
      await store.rotate();
      await store.retire(old);
      for (const f of await readdir(dir)) assert.equal((await stat(join(dir, f))).mode & 0o777, 0o600, f);
    } finally {
      process.umask(old);
    }
  });
});

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64");
}
