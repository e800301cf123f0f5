import type { ServiceImpl } from "@connectrpc/connect";
import type { SnapshotService } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { Context } from "./context.js";
import { toConnectError } from "./domain/errors.js";
import { listKeys } from "./rpc/list-keys.js";
import { retireKey } from "./rpc/retire-key.js";
import { rotateKey } from "./rpc/rotate-key.js";
import { signManifest } from "./rpc/sign-manifest.js";
import { verifyManifest } from "./rpc/verify-manifest.js";

/** Every RPC of SnapshotService; a missing one is a type error. */
export function createRoutes(ctx: Context): ServiceImpl<typeof SnapshotService> {
  return {
    signManifest: (req) => edge(ctx, "SignManifest", () => signManifest(ctx, req)),
    verifyManifest: (req) => edge(ctx, "VerifyManifest", () => verifyManifest(ctx, req)),
    listKeys: (req) => edge(ctx, "ListKeys", () => listKeys(ctx, req)),
    rotateKey: (req) => edge(ctx, "RotateKey", () => rotateKey(ctx, req)),
    retireKey: (req) => edge(ctx, "RetireKey", () => retireKey(ctx, req)),
  };
}

/** The one place domain errors become ConnectErrors. */
async function edge<T>(ctx: Context, rpc: string, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toConnectError(err, ctx.logger, rpc);
  }
}
