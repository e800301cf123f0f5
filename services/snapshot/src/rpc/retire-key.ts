import type { RetireKeyRequest } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { Context } from "../context.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { isValidKid } from "../domain/manifest.js";

/**
 * Snapshots signed by a retired key are refused from then on; the key stays listed so an
 * operator can see why. Retiring a retired key is a no-op success.
 */
export async function retireKey(ctx: Context, req: RetireKeyRequest): Promise<Record<string, never>> {
  if (!isValidKid(req.kid)) throw new InvalidArgumentError(["kid must be 16 lower-case hex characters"]);
  await ctx.keys().retire(req.kid);
  return {};
}
