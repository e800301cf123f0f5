import type { SignManifestRequest } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { Context } from "../context.js";
import { manifestSigningBytes, validateManifest } from "../domain/manifest.js";

export function signManifest(ctx: Context, req: SignManifestRequest): { signature: Uint8Array; kid: string } {
  validateManifest(req.manifest);
  const m = req.manifest;
  const { kid, signature } = ctx.keys().sign((signingKid) => manifestSigningBytes(m, signingKid));
  ctx.logger.debug({ "sandbox.id": m.sandboxId, "snapshot.id": m.snapshotId, kid }, "signed manifest");
  return { signature, kid };
}
