import type { FastifyInstance } from "fastify";
import { intParam } from "../body.js";
import { type DaytonaContext, requestOrigin } from "../context.js";
import { type IdParams, ownedSandbox } from "./common.js";

type PortParams = { Params: IdParams["Params"] & { port: string } };

/**
 * `GET /sandbox/{id}/ports/{port}/preview-url` → `{sandboxId, url, token}` (spec §5.4). The URL
 * is path-based (`<origin>/preview/<id>/<port>/`), served by this gateway (preview.ts); the
 * token opens it through `X-Daytona-Preview-Token` or `?DAYTONA_SANDBOX_AUTH_KEY=`.
 */
export async function previewUrlRoute(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.get<PortParams>("/sandbox/:idOrName/ports/:port/preview-url", async (req) => {
    const port = intParam(req.params.port, "port", 1, 65_535);
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    return {
      sandboxId: row.sandbox_id,
      url: `${requestOrigin(req)}/preview/${row.sandbox_id}/${port}/`,
      token: row.preview_token,
    };
  });
}
