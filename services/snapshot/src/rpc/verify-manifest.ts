import type { VerifyManifestRequest } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { Context } from "../context.js";
import { SIGNATURE_BYTES, verify } from "../crypto/ed25519.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { manifestProblems, manifestSigningBytes } from "../domain/manifest.js";

export const REASON_UNKNOWN_KEY = "unknown key";
export const REASON_SIGNATURE_MISMATCH = "signature mismatch";

/**
 * A malformed request is InvalidArgument; a well-formed one that does not verify is
 * `valid: false` with a reason, because "this image is not ours" is an answer, not a failure.
 */
export function verifyManifest(ctx: Context, req: VerifyManifestRequest): { valid: boolean; reason: string } {
  const problems = manifestProblems(req.manifest);
  if (req.signature.length !== SIGNATURE_BYTES) {
    problems.push(`signature must be ${SIGNATURE_BYTES} bytes, got ${req.signature.length}`);
  }
  if (req.kid === "") problems.push("kid is required");
  if (problems.length > 0 || req.manifest === undefined) throw new InvalidArgumentError(problems);

  const m = req.manifest;
  const publicKey = ctx.keys().publicKey(req.kid);
  const reason =
    publicKey === undefined
      ? REASON_UNKNOWN_KEY
      : verify(req.signature, manifestSigningBytes(m), publicKey)
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
