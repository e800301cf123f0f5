import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  DeleteSnapshotRequestSchema,
  ListSnapshotsRequestSchema,
  SnapshotSandboxRequestSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { Template } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { FastifyInstance } from "fastify";
import { GatewayError, InvalidArgumentError, SnapshotNotFoundError } from "../../../errors.js";
import { optString } from "../../../rest/body.js";
import { deleteSnapshot } from "../../../rpc/delete-snapshot.js";
import { deleteTemplate } from "../../../rpc/delete-template.js";
import { getTemplate } from "../../../rpc/get-template.js";
import { listSnapshots } from "../../../rpc/list-snapshots.js";
import { snapshotSandbox } from "../../../rpc/snapshot-sandbox.js";
import { TEMPLATE_NAME_RE } from "../../../templates/steps.js";
import { e2bBody } from "../body.js";
import type { E2bContext } from "../context.js";
import { pageSnapshots, parseSnapshotQuery } from "../snapshot-query.js";
import { forgetE2bTemplate } from "../template-db.js";
import { snapshotInfoJson } from "../views.js";

/**
 * E2B snapshots (spec §5.1): `POST /sandboxes/{id}/snapshots` → 201 `SnapshotInfo` (the
 * sandbox keeps running); `GET /snapshots` (`sandboxID`, `name`, `limit`, `nextToken` →
 * `X-Next-Token`) → `SnapshotInfo[]`; `DELETE /templates/{snapshotId}` → 204, unknown → 404
 * code (the SDK's `false`). A snapshot restores with `Sandbox.create(snapshotId or name)`.
 * dnah snapshots are signed; on the jail runtime they hold disk and share, not memory.
 */
export async function snapshotRoutes(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  app.post<{ Params: { id: string } }>(
    "/sandboxes/:id/snapshots",
    { config: { e2bApi: true } },
    async (req, reply) => {
      const body = e2bBody(req.body);
      const name = body.name === null ? undefined : optString(body, "name");
      const res = await snapshotSandbox(
        ctx.deps,
        create(SnapshotSandboxRequestSchema, { sandboxId: req.params.id, name: name ?? "", metadata: {} }),
      );
      return reply.code(201).send(snapshotInfoJson(res.snapshot!));
    },
  );

  app.get("/snapshots", { config: { e2bApi: true } }, async (req, reply) => {
    const q = parseSnapshotQuery(req.url);
    const res = await listSnapshots(
      ctx.deps,
      create(ListSnapshotsRequestSchema, { sandboxId: q.sandboxId ?? "" }),
    );
    const items = res.snapshots.map((s) => ({
      snapshot: s,
      snapshotId: s.snapshotId,
      name: s.name,
      createdAtMs: s.createdAt !== undefined ? timestampMs(s.createdAt) : 0,
    }));
    const { page, nextToken } = pageSnapshots(items, q);
    if (nextToken !== undefined) reply.header("X-Next-Token", nextToken);
    return page.map((s) => snapshotInfoJson(s.snapshot));
  });

  app.delete<{ Params: { id: string } }>(
    "/templates/:id",
    { config: { e2bApi: true } },
    async (req, reply) => {
      const snapshotId = req.params.id;
      try {
        await deleteSnapshot(ctx.deps, create(DeleteSnapshotRequestSchema, { snapshotId }));
      } catch (err) {
        if (!(err instanceof SnapshotNotFoundError) && !(err instanceof InvalidArgumentError)) throw err;
        // Not a snapshot: one of the caller's templates (E2B's templates and snapshots share
        // this route). Neither: as unknown as a missing snapshot (the SDK's `false`).
        if (!(await deleteOwnTemplate(ctx, snapshotId, req.apiKeyId)))
          throw err instanceof SnapshotNotFoundError
            ? err
            : new SnapshotNotFoundError(snapshotId, { cause: err });
      }
      return reply.code(204).send();
    },
  );
}

/** Deletes the caller's template `id` (and its E2B tags); false when it has none of that name. */
async function deleteOwnTemplate(ctx: E2bContext, id: string, owner: string): Promise<boolean> {
  if (!TEMPLATE_NAME_RE.test(id)) return false;
  let t: Template;
  try {
    t = await getTemplate(ctx.deps, id, { owner });
  } catch (err) {
    if (err instanceof GatewayError && err.kind === "not_found") return false;
    throw err;
  }
  if (t.owner !== owner) return false;
  await deleteTemplate(ctx.deps, t.templateId, { owner });
  await forgetE2bTemplate(ctx.db, t.templateId);
  return true;
}
