import { randomBytes } from "node:crypto";

const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";
export const SANDBOX_ID_LENGTH = 20;
/** E2B routes on `<port>-<id>.<domain>` and rejects ids outside this set. */
export const SANDBOX_ID_RE = /^[a-z0-9]{20}$/;

/** A new sandbox id: 20 characters of [a-z0-9] (about 103 bits), uniformly random. */
export function newSandboxId(): string {
  // Rejection sampling: 252 = 7 * 36, so bytes below 252 map onto the alphabet without bias.
  let id = "";
  while (id.length < SANDBOX_ID_LENGTH) {
    for (const b of randomBytes(32)) {
      if (b >= 252) continue;
      id += ALPHABET[b % 36];
      if (id.length === SANDBOX_ID_LENGTH) break;
    }
  }
  return id;
}
