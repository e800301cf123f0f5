export { configFromEnv, DEFAULT_PORT, type SnapshotConfig } from "./config.js";
export {
  generateKey,
  getPublicKey,
  type KeyPair,
  PUBLIC_KEY_BYTES,
  SECRET_KEY_BYTES,
  SIGNATURE_BYTES,
  sign,
  verify,
} from "./crypto/ed25519.js";
export {
  FailedPreconditionError,
  InvalidArgumentError,
  KeyNotFoundError,
  KeyStoreError,
  NotReadyError,
  toConnectError,
} from "./domain/errors.js";
export {
  isValidKid,
  MANIFEST_SIGNING_PREFIX,
  type ManifestFields,
  manifestProblems,
  manifestSigningBytes,
  validateManifest,
} from "./domain/manifest.js";
export { kidForPublicKey } from "./keys/store.js";
export { REASON_RETIRED_KEY, REASON_SIGNATURE_MISMATCH, REASON_UNKNOWN_KEY } from "./rpc/verify-manifest.js";
export { createSnapshotService, type SnapshotOverrides, type SnapshotServiceHandle } from "./snapshot.js";
