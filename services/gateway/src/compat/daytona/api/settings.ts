import { create } from "@bufbuild/protobuf";
import { UpdateLifecycleRequestSchema } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError, SandboxNotFoundError } from "../../../errors.js";
import { updateLifecycle } from "../../../rpc/update-lifecycle.js";
import { checkMetadata } from "../../../rpc/validate.js";
import { daytonaBody, intParam, toStringMap } from "../body.js";
import { type DaytonaContext, requestOrigin } from "../context.js";
import { setLabels } from "../db.js";
import {
  type Intervals,
  MAX_INTERVAL_MIN,
  nativeLifecycleValues,
  normalizeAutoArchive,
  normalizeAutoDelete,
} from "../lifecycle.js";
import { observe, viewOf } from "../native.js";
import { fullDto, type IdParams, ownedSandbox } from "./common.js";

type IntervalParams = { Params: { idOrName: string; interval: string } };

const INTERVALS: readonly { path: string; key: keyof Intervals; normalize: (n: number) => number }[] = [
  { path: "autostop", key: "autoStop", normalize: nonNegative("autostop interval") },
  {
    path: "autoarchive",
    key: "autoArchive",
    normalize: (n) => normalizeAutoArchive(nonNegative("autoarchive interval")(n)),
  },
  // Negative means "never" (-1), 0 "as soon as it stops".
  { path: "autodelete", key: "autoDelete", normalize: normalizeAutoDelete },
];

function nonNegative(what: string): (n: number) => number {
  return (n) => {
    if (n < 0) throw new InvalidArgumentError(`${what} must not be negative`);
    return n;
  };
}

/**
 * Lifecycle settings: `POST /sandbox/{id}/autostop|autoarchive|autodelete/{minutes}` (the
 * native UpdateLifecycle: the scheduler's reaper enforces them, the native API reads them),
 * `PUT /sandbox/{id}/labels` `{labels}` (replaces them all; answers the DTO) and
 * `POST /sandbox/{id}/last-activity` (the native idle clock).
 */
export async function settingsRoutes(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  for (const iv of INTERVALS) {
    app.post<IntervalParams>(`/sandbox/:idOrName/${iv.path}/:interval`, async (req) => {
      const minutes = iv.normalize(
        intParam(req.params.interval, "interval", -MAX_INTERVAL_MIN, MAX_INTERVAL_MIN),
      );
      const row = await ownedSandbox(ctx, req, req.params.idOrName);
      let native: Awaited<ReturnType<typeof updateLifecycle>>["sandbox"];
      try {
        ({ sandbox: native } = await updateLifecycle(
          ctx.deps,
          create(UpdateLifecycleRequestSchema, {
            sandboxId: row.sandbox_id,
            ...nativeLifecycleValues({ [iv.key]: minutes }),
          }),
        ));
      } catch (err) {
        // Gone underneath: forget the row too.
        if (err instanceof SandboxNotFoundError) await observe(ctx, row, undefined, requestOrigin(req));
        throw err;
      }
      const seen = await observe(ctx, row, native, requestOrigin(req));
      if (seen === undefined) throw new SandboxNotFoundError(req.params.idOrName);
      return fullDto(req, seen, native);
    });
  }
  app.put<IdParams>("/sandbox/:idOrName/labels", async (req) => {
    const b = daytonaBody(req.body);
    if (b.labels === undefined || b.labels === null) throw new InvalidArgumentError("labels is required");
    const labels = toStringMap(b.labels, "labels");
    checkMetadata("labels", labels);
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    const updated = await setLabels(ctx.db, row.sandbox_id, labels);
    if (updated === undefined) throw new SandboxNotFoundError(req.params.idOrName);
    const v = await viewOf(ctx, updated, requestOrigin(req));
    return fullDto(req, v.row, v.native);
  });
  app.post<IdParams>("/sandbox/:idOrName/last-activity", async (req, reply) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    ctx.deps.activity.touch(row.sandbox_id);
    return reply.code(201).send();
  });
}
