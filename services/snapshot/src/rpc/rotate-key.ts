import type { RotateKeyRequest } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { Context } from "../context.js";

export async function rotateKey(ctx: Context, _req: RotateKeyRequest): Promise<{ kid: string }> {
  return { kid: await ctx.keys().rotate() };
}
