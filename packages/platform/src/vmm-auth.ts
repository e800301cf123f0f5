import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";
import type { Interceptor } from "@connectrpc/connect";
import type { Db } from "./db.js";

/**
 * Who may drive a vmm. The control plane (scheduler and gateways) holds one Ed25519 key pair,
 * kept in Postgres (the one source of truth, which every control-plane service already
 * trusts); a vmm learns only the public half, from the scheduler, when it joins. Every call to
 * a vmm — its Connect RPCs, its share routes, every tunnel upgrade — carries a token the
 * control plane signed for that vmm (its URL is the audience) that expires within a minute, so
 * nothing else on the network can drive a vmm, a token for one host is refused by another,
 * and a host never holds anything that could drive its neighbours.
 *
 * Token: `dnah1.<expiry, unix s>.<base64url Ed25519 signature of "dnah-vmm-token\0<aud>\0<exp>">`.
 */
export interface ControlKey {
  readonly privateKey: KeyObject;
  /** The raw 32-byte public key, as a vmm receives it. */
  readonly publicKey: Uint8Array;
}

/** How long a token is good for. */
export const VMM_TOKEN_TTL_S = 60;
/** Clock skew tolerated between control plane and host. */
const SKEW_S = 30;

/** The control plane's key pair: created by the first service that asks, then shared. */
export async function loadOrCreateControlKey(db: Pick<Db, "query">): Promise<ControlKey> {
  await db.query(
    `CREATE TABLE IF NOT EXISTS control_keys (
       id integer PRIMARY KEY CHECK (id = 1),
       private_key_pem text NOT NULL,
       created_at timestamptz NOT NULL DEFAULT now())`,
  );
  const { privateKey } = generateKeyPairSync("ed25519");
  await db.query(
    "INSERT INTO control_keys (id, private_key_pem) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
    [privateKey.export({ type: "pkcs8", format: "pem" }).toString()],
  );
  const { rows } = await db.query<{ private_key_pem: string }>(
    "SELECT private_key_pem FROM control_keys WHERE id = 1",
  );
  const key = createPrivateKey(rows[0]!.private_key_pem);
  return { privateKey: key, publicKey: rawPublicKey(key) };
}

function rawPublicKey(privateKey: KeyObject): Uint8Array {
  const jwk = createPublicKey(privateKey).export({ format: "jwk" });
  return Buffer.from(jwk.x!, "base64url");
}

const message = (aud: string, exp: number) => Buffer.from(`dnah-vmm-token\0${aud}\0${exp}`);

/** A token for the vmm at `aud` (its URL), good for VMM_TOKEN_TTL_S. */
export function mintVmmToken(key: ControlKey, aud: string, nowMs = Date.now()): string {
  const exp = Math.floor(nowMs / 1000) + VMM_TOKEN_TTL_S;
  return `dnah1.${exp}.${sign(null, message(aud, exp), key.privateKey).toString("base64url")}`;
}

/** Why a token is refused, or undefined when it is good for `aud`. */
export function checkVmmToken(
  publicKey: Uint8Array,
  aud: string,
  token: string | undefined,
  nowMs = Date.now(),
): string | undefined {
  if (token === undefined) return "missing token";
  const m = /^dnah1\.(\d{1,12})\.([A-Za-z0-9_-]{86})$/.exec(token);
  if (m === null) return "malformed token";
  const exp = Number(m[1]);
  const now = Math.floor(nowMs / 1000);
  if (exp < now - SKEW_S) return "expired token";
  if (exp > now + VMM_TOKEN_TTL_S + SKEW_S) return "token valid for too long";
  const pub = createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKey).toString("base64url") },
    format: "jwk",
  });
  if (!verify(null, message(aud, exp), pub, Buffer.from(m[2]!, "base64url"))) return "bad signature";
  return undefined;
}

/** `authorization: Bearer <token>` for one call to the vmm at `vmmUrl`. */
export function vmmAuthorization(key: ControlKey, vmmUrl: string): string {
  return `Bearer ${mintVmmToken(key, vmmUrl)}`;
}

/** A Connect interceptor signing every call to the vmm at `vmmUrl`. */
export function vmmAuthInterceptor(key: ControlKey, vmmUrl: string): Interceptor {
  return (next) => async (req) => {
    req.header.set("authorization", vmmAuthorization(key, vmmUrl));
    return next(req);
  };
}
