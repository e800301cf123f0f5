import { create } from "@bufbuild/protobuf";
import { DeleteSandboxRequestSchema } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { deleteSandbox } from "../../../rpc/delete-sandbox.js";
import type { E2bContext } from "../context.js";
import { deleteE2bSandbox } from "../db.js";

/** `DELETE /sandboxes/{id}`: 204; unknown or already killed → 404 code (the SDK returns false). */
export async function killRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  app.delete<{ Params: { id: string } }>(
    "/sandboxes/:id",
    { config: { e2bApi: true } },
    async (req, reply) => {
      const sandboxId = req.params.id;
      try {
        await deleteSandbox(ctx.deps, create(DeleteSandboxRequestSchema, { sandboxId }));
      } finally {
        ctx.tunnels.forget(sandboxId);
      }
      await deleteE2bSandbox(ctx.db, sandboxId).catch((err: unknown) =>
        ctx.logger.warn({ err, "sandbox.id": sandboxId }, "cannot forget a killed E2B sandbox"),
      );
      return reply.code(204).send();
    },
  );
}
