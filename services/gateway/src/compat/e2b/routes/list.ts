import { create } from "@bufbuild/protobuf";
import { ListSandboxesRequestSchema, SandboxState } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { listSandboxes } from "../../../rpc/list-sandboxes.js";
import type { E2bContext } from "../context.js";
import { e2bSandboxRows } from "../db.js";
import { type E2bState, pageOf, parseListQuery } from "../list-query.js";
import { e2bStateOf, listedSandboxJson, startedAtOf } from "../views.js";

const NATIVE_STATE: Record<E2bState, SandboxState> = {
  running: SandboxState.RUNNING,
  paused: SandboxState.PAUSED,
};

/**
 * `GET /v2/sandboxes` (SDK 2.51 `Sandbox.list`) and `GET /sandboxes` (v1, running only):
 * `ListedSandbox[]` filtered by state, metadata, template and start time, ordered by start
 * time (default newest first), `limit` per page (1–100, default 100). Paging is keyset: when
 * more items follow, `X-Next-Token` names the last item sent and the SDK passes it back as
 * `nextToken`. `X-Total-Running` counts the running matches before paging.
 */
export async function listRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  for (const [url, v1] of [
    ["/v2/sandboxes", false],
    ["/sandboxes", true],
  ] as const) {
    app.get(url, { config: { e2bApi: true } }, async (req, reply) => {
      const q = parseListQuery(req.url);
      if (v1) q.states = new Set(["running"]);
      if (q.states.size === 0) return [];
      const res = await listSandboxes(
        ctx.deps,
        create(ListSandboxesRequestSchema, {
          metadata: q.metadata,
          states: [...q.states].map((s) => NATIVE_STATE[s]),
        }),
      );
      const live = res.sandboxes.filter(
        (s) => s.state === SandboxState.RUNNING || s.state === SandboxState.PAUSED,
      );
      // Start times (and ends) are the E2B records', so they are read before ordering.
      const rows = await e2bSandboxRows(
        ctx.db,
        live.map((s) => s.sandboxId),
      );
      const listable = live.map((s) => ({
        sandbox: s,
        sandboxId: s.sandboxId,
        templateId: s.templateId,
        startedAt: startedAtOf(s, rows.get(s.sandboxId)),
        state: e2bStateOf(s),
      }));
      const { page, nextToken, totalRunning } = pageOf(listable, q);
      if (nextToken !== undefined) reply.header("X-Next-Token", nextToken);
      reply.header("X-Total-Running", String(totalRunning));
      return page.map((s) => listedSandboxJson(s.sandbox, rows.get(s.sandboxId)));
    });
  }
}
