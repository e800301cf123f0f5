import type { VerifyManifestRequest } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { Context } from "../context.js";
import { SIGNATURE_BYTES, verify } from "../crypto/ed25519.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { manifestProblems, manifestSigningBytes } from "../domain/manifest.js";

export const REASON_UNKNOWN_KEY = "unknown key";
export const REASON_RETIRED_KEY = "retired key";
export const REASON_SIGNATURE_MISMATCH = "signature mismatch";

/**
 * A malformed request is InvalidArgument; a well-formed one that does not verify is
 * `valid: false` with a reason, because "this image is not ours" is an answer, not a failure.
 * A kid that is not in the store, well-formed or not, is "unknown key": it is data read back
 * from a snapshot record, and a garbled one is as untrusted as a foreign one.
 */
export function verifyManifest(ctx: Context, req: VerifyManifestRequest): { valid: boolean; reason: string } {
  const problems = manifestProblems(req.manifest);
  if (req.signature.length !== SIGNATURE_BYTES) {
    problems.push(`signature must be ${SIGNATURE_BYTES} bytes, got ${req.signature.length}`);
  }
  if (req.kid === "") problems.push("kid is required");
  if (problems.length > 0 || req.manifest === undefined) throw new InvalidArgumentError(problems);

  const m = req.manifest;
  const key = ctx.keys().get(req.kid);
  const reason =
    key === undefined
      ? REASON_UNKNOWN_KEY
      : key.retiredAt !== undefined
        ? REASON_RETIRED_KEY
        : verify(req.signature, manifestSigningBytes(m, key.kid), key.publicKey)
          ? undefined
          : REASON_SIGNATURE_MISMATCH;
  if (reason === undefined) return { valid: true, reason: "" };
  // A failed verification may be tampering; worth a line for whoever audits restores.
  ctx.logger.warn(
    { "sandbox.id": m.sandboxId, "snapshot.id": m.snapshotId, kid: req.kid, reason },
    "manifest did not verify",
  );
  return { valid: false, reason };
}
