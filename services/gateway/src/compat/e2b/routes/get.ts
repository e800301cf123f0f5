import { create } from "@bufbuild/protobuf";
import { GetSandboxRequestSchema } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { getSandbox } from "../../../rpc/get-sandbox.js";
import type { E2bContext } from "../context.js";
import { e2bSandboxRows } from "../db.js";
import { sandboxDetailJson } from "../views.js";

/** `GET /sandboxes/{id}`: 200 `SandboxDetail` (running or paused); unknown or killed → 404 code. */
export async function getRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  app.get<{ Params: { id: string } }>("/sandboxes/:id", { config: { e2bApi: true } }, async (req) => {
    const { sandbox } = await getSandbox(
      ctx.deps,
      create(GetSandboxRequestSchema, { sandboxId: req.params.id }),
    );
    const rows = await e2bSandboxRows(ctx.db, [sandbox!.sandboxId]);
    return sandboxDetailJson(sandbox!, rows.get(sandbox!.sandboxId), ctx.tokens.tokenFor(sandbox!.sandboxId));
  });
}
