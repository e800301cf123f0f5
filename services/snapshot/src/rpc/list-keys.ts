import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ListKeysRequest, ListKeysResponseSchema } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { Context } from "../context.js";

/** Every key, retired ones included, oldest first; public keys only. */
export function listKeys(
  ctx: Context,
  _req: ListKeysRequest,
): MessageInitShape<typeof ListKeysResponseSchema> {
  return {
    keys: ctx
      .keys()
      .list()
      .map((k) => ({
        kid: k.kid,
        publicKey: k.publicKey,
        active: k.active,
        createdAt: timestampFromDate(k.createdAt),
        ...(k.retiredAt !== undefined && { retiredAt: timestampFromDate(k.retiredAt) }),
      })),
  };
}
