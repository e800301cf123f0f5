import type { ListKeysRequest } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { Context } from "../context.js";

/** Public keys only, oldest first; private keys never leave the store. */
export function listKeys(
  ctx: Context,
  _req: ListKeysRequest,
): { keys: { kid: string; publicKey: Uint8Array; active: boolean }[] } {
  return {
    keys: ctx
      .keys()
      .list()
      .map((k) => ({ kid: k.kid, publicKey: k.publicKey, active: k.active })),
  };
}
