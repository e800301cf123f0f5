import { InvalidArgumentError } from "./errors.js";

/**
 * What a signature covers. Structurally a subset of the generated `Manifest`, so this module
 * stays free of Connect and protobuf.
 */
export interface ManifestFields {
  readonly sandboxId: string;
  readonly snapshotId: string;
  /** Lower-case hex SHA-256 of the snapshot's content listing. */
  readonly manifestSha256: string;
  readonly sizeBytes: bigint;
  readonly createdAtMs: bigint;
}

/**
 * Domain separation: a signature over these bytes can never be mistaken for a signature over
 * anything else this key might sign later (a new version gets a new prefix). The NUL ends it.
 */
export const MANIFEST_SIGNING_PREFIX = "dnah.snapshot.manifest.v1\0";

const SHA256_HEX = /^[0-9a-f]{64}$/;
/** A key id as the key store makes them: the first 16 hex characters of SHA-256(public key). */
const KID = /^[0-9a-f]{16}$/;
const U64_MAX = (1n << 64n) - 1n;
// A lone surrogate would be encoded as U+FFFD, so two different ids could sign the same bytes.
const LONE_SURROGATE = /\p{Cs}/u;

/** Every problem with a manifest, or an empty list. */
export function manifestProblems(m: ManifestFields | undefined): string[] {
  if (m === undefined) return ["manifest is required"];
  const problems: string[] = [];
  for (const [name, value] of [
    ["manifest.sandbox_id", m.sandboxId],
    ["manifest.snapshot_id", m.snapshotId],
  ] as const) {
    if (value.length === 0) problems.push(`${name} is required`);
    else if (LONE_SURROGATE.test(value)) problems.push(`${name} is not valid UTF-16 text`);
  }
  if (!SHA256_HEX.test(m.manifestSha256)) {
    problems.push("manifest.manifest_sha256 must be 64 lower-case hex characters");
  }
  for (const [name, value] of [
    ["manifest.size_bytes", m.sizeBytes],
    ["manifest.created_at_ms", m.createdAtMs],
  ] as const) {
    if (value < 0n || value > U64_MAX) problems.push(`${name} must fit in an unsigned 64-bit integer`);
  }
  return problems;
}

/** True for a well-formed key id (16 lower-case hex characters). */
export function isValidKid(kid: string): boolean {
  return KID.test(kid);
}

/** Throws InvalidArgumentError listing every problem with the manifest. */
export function validateManifest(m: ManifestFields | undefined): asserts m is ManifestFields {
  const problems = manifestProblems(m);
  if (problems.length > 0) throw new InvalidArgumentError(problems);
}

/**
 * The exact bytes a manifest signature covers:
 *
 *   "dnah.snapshot.manifest.v1\0"
 *   u32be(len) sandbox_id utf-8
 *   u32be(len) snapshot_id utf-8
 *   u32be(len) manifest_sha256 utf-8
 *   u64be size_bytes
 *   u64be created_at_ms
 *   u32be(len) kid utf-8
 *
 * Length prefixes keep field boundaries unambiguous ("ab"+"c" differs from "a"+"bc"). The kid
 * is signed too, so a signature cannot be relabelled as another key's: verifying with any other
 * kid changes the bytes, not only the public key. Not a protobuf encoding: that is not
 * canonical across implementations. Throws on an invalid manifest or kid, so nothing invalid
 * can be signed.
 */
export function manifestSigningBytes(m: ManifestFields, kid: string): Uint8Array {
  const problems = manifestProblems(m);
  if (!isValidKid(kid)) problems.push("kid must be 16 lower-case hex characters");
  if (problems.length > 0) throw new InvalidArgumentError(problems);
  const enc = new TextEncoder();
  const prefix = enc.encode(MANIFEST_SIGNING_PREFIX);
  const head = [m.sandboxId, m.snapshotId, m.manifestSha256].map((s) => enc.encode(s));
  const kidBytes = enc.encode(kid);
  const total = prefix.length + head.reduce((n, s) => n + 4 + s.length, 0) + 8 + 8 + 4 + kidBytes.length;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(prefix, 0);
  let at = prefix.length;
  const putString = (s: Uint8Array) => {
    view.setUint32(at, s.length, false);
    out.set(s, at + 4);
    at += 4 + s.length;
  };
  for (const s of head) putString(s);
  view.setBigUint64(at, m.sizeBytes, false);
  view.setBigUint64(at + 8, m.createdAtMs, false);
  at += 16;
  putString(kidBytes);
  return out;
}
