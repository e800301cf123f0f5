import type { SignManifestRequest } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { Context } from "../context.js";
import { manifestSigningBytes, validateManifest } from "../domain/manifest.js";

export function signManifest(ctx: Context, req: SignManifestRequest): { signature: Uint8Array; kid: string } {
  validateManifest(req.manifest);
  const { kid, signature } = ctx.keys().sign(manifestSigningBytes(req.manifest));
  ctx.logger.debug(
    { "sandbox.id": req.manifest.sandboxId, "snapshot.id": req.manifest.snapshotId, kid },
    "signed manifest",
  );
  return { signature, kid };
}
