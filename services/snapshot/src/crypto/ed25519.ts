import { createHash } from "node:crypto";
import * as ed from "@noble/ed25519";

// The only module that touches @noble/ed25519 (STYLE rule 14). Its synchronous API needs a
// SHA-512; node:crypto provides one without another dependency.
ed.hashes.sha512 = (message) => new Uint8Array(createHash("sha512").update(message).digest());

/** Ed25519 secret keys are the 32-byte RFC 8032 seed; public keys and signatures are raw bytes. */
export const SECRET_KEY_BYTES = 32;
export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;

export interface KeyPair {
  readonly secretKey: Uint8Array;
  readonly publicKey: Uint8Array;
}

/** A fresh key pair from the platform CSPRNG. */
export function generateKey(): KeyPair {
  const { secretKey, publicKey } = ed.keygen();
  return { secretKey, publicKey };
}

/** The public key of a 32-byte secret key (seed). */
export function getPublicKey(secretKey: Uint8Array): Uint8Array {
  return ed.getPublicKey(secretKey);
}

/** A deterministic RFC 8032 Ed25519 signature (64 bytes). */
export function sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  return ed.sign(message, secretKey);
}

/**
 * True only for a valid signature. Uses strict RFC 8032 checks (`zip215: false`): non-canonical
 * encodings and small-order public keys are rejected, so a signature cannot be re-encoded into a
 * second one that also verifies. Wrong lengths are simply invalid, never an exception.
 */
export function verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.length !== SIGNATURE_BYTES || publicKey.length !== PUBLIC_KEY_BYTES) return false;
  return ed.verify(signature, message, publicKey, { zip215: false });
}
