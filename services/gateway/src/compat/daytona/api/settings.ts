import type { FastifyInstance } from "fastify";
import { InvalidArgumentError, SandboxNotFoundError } from "../../../errors.js";
import { checkMetadata } from "../../../rpc/validate.js";
import { daytonaBody, intParam, toStringMap } from "../body.js";
import type { DaytonaContext } from "../context.js";
import { type IntervalColumn, setInterval, setLabels, touchActivity } from "../db.js";
import { MAX_AUTO_ARCHIVE_MIN, MAX_INTERVAL_MIN } from "../lifecycle.js";
import { fullDto, type IdParams, ownedSandbox } from "./common.js";

type IntervalParams = { Params: { idOrName: string; interval: string } };

const INTERVALS: readonly { path: string; column: IntervalColumn; normalize: (n: number) => number }[] = [
  { path: "autostop", column: "auto_stop_min", normalize: nonNegative("autostop interval") },
  {
    path: "autoarchive",
    column: "auto_archive_min",
    normalize: (n) => {
      nonNegative("autoarchive interval")(n);
      return n === 0 || n > MAX_AUTO_ARCHIVE_MIN ? MAX_AUTO_ARCHIVE_MIN : n;
    },
  },
  // Negative means "never" (-1), 0 "as soon as it stops".
  { path: "autodelete", column: "auto_delete_min", normalize: (n) => (n < 0 ? -1 : n) },
];

function nonNegative(what: string): (n: number) => number {
  return (n) => {
    if (n < 0) throw new InvalidArgumentError(`${what} must not be negative`);
    return n;
  };
}

/**
 * Lifecycle settings: `POST /sandbox/{id}/autostop|autoarchive|autodelete/{minutes}`,
 * `PUT /sandbox/{id}/labels` `{labels}` (replaces them all; answers the DTO) and
 * `POST /sandbox/{id}/last-activity`.
 */
export async function settingsRoutes(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  for (const iv of INTERVALS) {
    app.post<IntervalParams>(`/sandbox/:idOrName/${iv.path}/:interval`, async (req) => {
      const minutes = iv.normalize(
        intParam(req.params.interval, "interval", -MAX_INTERVAL_MIN, MAX_INTERVAL_MIN),
      );
      const row = await ownedSandbox(ctx, req, req.params.idOrName);
      const updated = await setInterval(ctx.db, row.sandbox_id, iv.column, minutes);
      if (updated === undefined) throw new SandboxNotFoundError(req.params.idOrName);
      return fullDto(req, updated);
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
    return fullDto(req, updated);
  });
  app.post<IdParams>("/sandbox/:idOrName/last-activity", async (req, reply) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    await touchActivity(ctx.db, row.sandbox_id);
    ctx.deps.activity.touch(row.sandbox_id);
    return reply.code(201).send();
  });
}
