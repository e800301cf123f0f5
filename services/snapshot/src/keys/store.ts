import { createHash, randomBytes } from "node:crypto";
import { chmod, link, mkdir, open, readdir, readFile, rename, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "@dnah/platform";
import { generateKey, getPublicKey, PUBLIC_KEY_BYTES, SECRET_KEY_BYTES, sign } from "../crypto/ed25519.js";
import { FailedPreconditionError, KeyNotFoundError, KeyStoreError } from "../domain/errors.js";

/**
 * Ed25519 keys on disk, one directory per service:
 *
 *   <dir>/               mode 0700
 *   <dir>/<kid>.json     mode 0600  {"kid", "publicKey": base64, "privateKey": base64 seed, "createdAt": ISO 8601}
 *   <dir>/active         mode 0600  the kid that signs, one line
 *   <dir>/<kid>.retired  mode 0600  present once the key is retired: when, ISO 8601, one line
 *
 * Every key in the directory verifies unless it is retired; only the active one signs. A
 * retirement is its own file so that key files, once written, are never rewritten. Files are
 * written to a temporary name, fsynced and renamed (or linked), so a crash leaves either the
 * old or the new state. One process owns a directory at a time.
 */
export interface KeyStore {
  readonly dir: string;
  activeKid(): string;
  /**
   * Signs `message(kid)` with the active key: the signed bytes name the key, so the caller
   * builds them for the kid that will sign. The private key never leaves the store.
   */
  sign(message: (kid: string) => Uint8Array): { kid: string; signature: Uint8Array };
  /** Public information on one key, retired or not; undefined if there is no such key. */
  get(kid: string): KeyInfo | undefined;
  /** Public information on every key, retired ones included, oldest first. */
  list(): KeyInfo[];
  /** Creates a new key and makes it active; the old ones keep verifying. */
  rotate(): Promise<string>;
  /**
   * Retires a key: it stays listed but no longer verifies. Idempotent (resolves to the first
   * retirement's time). KeyNotFoundError for an unknown kid, FailedPreconditionError for the
   * active key.
   */
  retire(kid: string): Promise<Date>;
  /** Waits for a rotation in progress to finish. */
  close(): Promise<void>;
}

export interface KeyInfo {
  readonly kid: string;
  readonly publicKey: Uint8Array;
  readonly createdAt: Date;
  readonly active: boolean;
  /** When it was retired; undefined while it verifies. */
  readonly retiredAt: Date | undefined;
}

export interface KeyStoreOptions {
  logger: Logger;
  now?: () => Date;
}

interface StoredKey {
  readonly kid: string;
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
  readonly createdAt: Date;
}

interface KeyFile {
  kid: string;
  publicKey: string;
  privateKey: string;
  createdAt: string;
}

const KID_RE = /^[0-9a-f]{16}$/;
const KEY_FILE_RE = /^([0-9a-f]{16})\.json$/;
const RETIRED_FILE_RE = /^([0-9a-f]{16})\.retired$/;
const TMP_FILE_RE = /^\.(?:[0-9a-f]{16}\.(?:json|retired)|active)\.[0-9a-f]{12}\.tmp$/;
const ACTIVE_FILE = "active";
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;

/** The key id: the first 16 hex characters of SHA-256 over the raw 32-byte public key. */
export function kidForPublicKey(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest("hex").slice(0, 16);
}

/**
 * Opens (creating if needed) the key directory and loads every key. The first open creates a
 * key and makes it active. Refuses to start on anything inconsistent rather than guess which
 * key should sign.
 */
export async function openKeyStore(dir: string, opts: KeyStoreOptions): Promise<KeyStore> {
  const log = opts.logger;
  const now = opts.now ?? (() => new Date());

  await prepareDir(dir, log);
  const keys = new Map<string, StoredKey>();
  const retired = new Map<string, Date>();
  let activeKid: string | undefined = await readActive(dir);

  for (const name of (await readdir(dir)).sort()) {
    if (TMP_FILE_RE.test(name)) {
      // Left by a crash mid-write; may hold a private key nobody will use.
      await unlink(join(dir, name));
      log.warn({ file: name }, "removed a stale temporary key file");
      continue;
    }
    const retiredMatch = RETIRED_FILE_RE.exec(name);
    if (retiredMatch !== null) {
      retired.set(retiredMatch[1]!, await readRetired(dir, name));
      continue;
    }
    const match = KEY_FILE_RE.exec(name);
    if (match === null) continue;
    const key = await loadKeyFile(dir, name, match[1]!, log);
    keys.set(key.kid, key);
  }
  for (const kid of retired.keys()) {
    if (keys.has(kid)) continue;
    // The key file was deleted by hand: its signatures already read "unknown key".
    retired.delete(kid);
    log.warn({ kid, dir }, "ignored the retirement of a key that is not there");
  }

  if (keys.size === 0) {
    if (activeKid !== undefined) {
      throw new KeyStoreError(`${join(dir, ACTIVE_FILE)} names ${activeKid} but the directory holds no keys`);
    }
    const key = await writeNewKey(dir, now());
    keys.set(key.kid, key);
    await writeActive(dir, key.kid);
    activeKid = key.kid;
    log.info({ kid: key.kid, dir }, "created the first signing key");
  } else if (activeKid === undefined) {
    // A crash between writing the first key and `active`, or a deleted `active`: every key here
    // that still verifies is trusted already, so the newest signing is no widening of trust.
    const newest = [...keys.values()]
      .filter((k) => !retired.has(k.kid))
      .sort(byAge)
      .at(-1);
    if (newest === undefined) {
      throw new KeyStoreError(
        `${join(dir, ACTIVE_FILE)} is missing and every key in ${dir} is retired; write the kid to use into it`,
      );
    }
    await writeActive(dir, newest.kid);
    activeKid = newest.kid;
    log.warn({ kid: activeKid, dir }, "no active key recorded; made the newest key active");
  } else if (!keys.has(activeKid)) {
    throw new KeyStoreError(`${join(dir, ACTIVE_FILE)} names ${activeKid}, which has no key file`);
  } else if (retired.has(activeKid)) {
    throw new KeyStoreError(`${join(dir, ACTIVE_FILE)} names ${activeKid}, which is retired`);
  }

  let active: StoredKey = keys.get(activeKid)!;
  let pending: Promise<unknown> = Promise.resolve();
  log.info({ dir, keys: keys.size, retired: retired.size, kid: active.kid }, "key store opened");

  const info = (k: StoredKey): KeyInfo => {
    const retiredAt = retired.get(k.kid);
    return {
      kid: k.kid,
      publicKey: Uint8Array.from(k.publicKey),
      createdAt: new Date(k.createdAt),
      active: k.kid === active.kid,
      retiredAt: retiredAt === undefined ? undefined : new Date(retiredAt),
    };
  };
  // Rotations and retirements run one at a time, so that the active key checked by a
  // retirement is the one on disk, and `active` on disk and in memory name the same key.
  const serialised = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = pending.then(fn);
    pending = run.catch(() => undefined);
    return run;
  };

  return {
    dir,
    activeKid: () => active.kid,
    sign(message) {
      // Synchronous: no rotation can change the active key between building and signing.
      const key = active;
      return { kid: key.kid, signature: sign(message(key.kid), key.secretKey) };
    },
    get(kid) {
      const key = keys.get(kid);
      return key === undefined ? undefined : info(key);
    },
    list() {
      return [...keys.values()].sort(byAge).map(info);
    },
    retire(kid) {
      return serialised(async () => {
        if (!keys.has(kid)) throw new KeyNotFoundError(kid);
        const already = retired.get(kid);
        if (already !== undefined) return new Date(already);
        if (kid === active.kid) {
          throw new FailedPreconditionError(`key ${kid} is the active signing key: rotate first`);
        }
        const at = now();
        await writeFileAtomic(dir, `${kid}.retired`, `${at.toISOString()}\n`, { exclusive: true });
        retired.set(kid, at);
        log.info({ kid }, "retired a key");
        return new Date(at);
      });
    },
    rotate() {
      return serialised(async () => {
        const key = await writeNewKey(dir, now());
        keys.set(key.kid, key);
        await writeActive(dir, key.kid);
        const previous = active.kid;
        active = key;
        log.info({ kid: key.kid, previous }, "rotated the signing key");
        return key.kid;
      });
    },
    async close() {
      await pending;
    },
  };
}

function byAge(a: StoredKey, b: StoredKey): number {
  return a.createdAt.getTime() - b.createdAt.getTime() || (a.kid < b.kid ? -1 : a.kid > b.kid ? 1 : 0);
}

async function prepareDir(dir: string, log: Logger): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: DIR_MODE });
    const st = await stat(dir);
    if (!st.isDirectory()) throw new KeyStoreError(`${dir} is not a directory`);
    if ((st.mode & 0o077) !== 0) {
      await chmod(dir, DIR_MODE);
      log.warn(
        { dir, mode: (st.mode & 0o777).toString(8) },
        "key directory was open to others; set it to 0700",
      );
    }
  } catch (err) {
    if (err instanceof KeyStoreError) throw err;
    throw new KeyStoreError(`cannot prepare key directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

async function readActive(dir: string): Promise<string | undefined> {
  const path = join(dir, ACTIVE_FILE);
  let raw: string;
  try {
    raw = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new KeyStoreError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  const kid = raw.trim();
  if (!KID_RE.test(kid))
    throw new KeyStoreError(`${path} does not hold a kid (16 lower-case hex characters)`);
  return kid;
}

async function readRetired(dir: string, name: string): Promise<Date> {
  const path = join(dir, name);
  let raw: string;
  try {
    raw = await readFile(path, "utf8");
  } catch (err) {
    throw new KeyStoreError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  const text = raw.trim();
  const at = new Date(text);
  // Refuse rather than guess: reading it as "not retired" would re-trust a key someone retired.
  if (!/^\d{4}-\d{2}-\d{2}T/.test(text) || Number.isNaN(at.getTime())) {
    throw new KeyStoreError(`${path} does not hold an ISO 8601 time`);
  }
  return at;
}

async function loadKeyFile(dir: string, name: string, kidFromName: string, log: Logger): Promise<StoredKey> {
  const path = join(dir, name);
  const bad = (why: string) => new KeyStoreError(`${path}: ${why}`);
  let text: string;
  try {
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) {
      await chmod(path, FILE_MODE);
      log.warn(
        { file: path, mode: (st.mode & 0o777).toString(8) },
        "key file was open to others; set it to 0600",
      );
    }
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new KeyStoreError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Deliberately no cause: V8's JSON errors quote the input, which holds a private key.
    throw bad("not valid JSON");
  }
  if (typeof parsed !== "object" || parsed === null) throw bad("not a JSON object");
  const f = parsed as Partial<Record<keyof KeyFile, unknown>>;
  if (f.kid !== kidFromName) throw bad("kid does not match the file name");
  const publicKey = decodeKey(f.publicKey, PUBLIC_KEY_BYTES);
  const secretKey = decodeKey(f.privateKey, SECRET_KEY_BYTES);
  if (publicKey === undefined) throw bad(`publicKey is not ${PUBLIC_KEY_BYTES} bytes of base64`);
  if (secretKey === undefined) throw bad(`privateKey is not ${SECRET_KEY_BYTES} bytes of base64`);
  if (kidForPublicKey(publicKey) !== kidFromName) throw bad("kid is not derived from publicKey");
  if (!equalBytes(getPublicKey(secretKey), publicKey)) throw bad("privateKey does not match publicKey");
  const createdAt = typeof f.createdAt === "string" ? new Date(f.createdAt) : new Date(Number.NaN);
  if (Number.isNaN(createdAt.getTime())) throw bad("createdAt is not an ISO 8601 time");
  return { kid: kidFromName, publicKey, secretKey, createdAt };
}

function decodeKey(value: unknown, length: number): Uint8Array | undefined {
  if (typeof value !== "string" || !/^[A-Za-z0-9+/]+={0,2}$/.test(value)) return undefined;
  const bytes = Buffer.from(value, "base64");
  return bytes.length === length ? new Uint8Array(bytes) : undefined;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

async function writeNewKey(dir: string, createdAt: Date): Promise<StoredKey> {
  const { secretKey, publicKey } = generateKey();
  const kid = kidForPublicKey(publicKey);
  const file: KeyFile = {
    kid,
    publicKey: Buffer.from(publicKey).toString("base64"),
    privateKey: Buffer.from(secretKey).toString("base64"),
    createdAt: createdAt.toISOString(),
  };
  // `exclusive`: a kid collision must never overwrite a key that may have signed snapshots.
  await writeFileAtomic(dir, `${kid}.json`, `${JSON.stringify(file, null, 2)}\n`, { exclusive: true });
  return { kid, publicKey, secretKey, createdAt };
}

async function writeActive(dir: string, kid: string): Promise<void> {
  await writeFileAtomic(dir, ACTIVE_FILE, `${kid}\n`, { exclusive: false });
}

async function writeFileAtomic(
  dir: string,
  name: string,
  content: string,
  opts: { exclusive: boolean },
): Promise<void> {
  const path = join(dir, name);
  const tmp = join(dir, `.${name}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    const fh = await open(tmp, "wx", FILE_MODE);
    try {
      await fh.chmod(FILE_MODE); // the umask may have narrowed it; never widened
      await fh.writeFile(content, "utf8");
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (opts.exclusive) {
      // link() fails atomically if the name is taken; rename() would replace it.
      await link(tmp, path);
      await unlink(tmp);
    } else {
      await rename(tmp, path);
    }
    await syncDir(dir);
  } catch (err) {
    await unlink(tmp).catch(() => undefined); // best effort; the original error is what matters
    if ((err as NodeJS.ErrnoException).code === "EEXIST") throw new KeyStoreError(`${path} already exists`);
    throw new KeyStoreError(`cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Makes the rename durable. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
