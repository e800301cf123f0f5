import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { GetSandboxMetricsRequestSchema } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { FailedPreconditionError, InvalidArgumentError, SandboxNotFoundError } from "../../../errors.js";
import { getSandboxMetrics } from "../../../rpc/get-sandbox-metrics.js";
import type { E2bContext } from "../context.js";
import { sandboxMetricJson } from "../views.js";

/** `GET /sandboxes/metrics` takes at most this many ids, measured this many at a time. */
const MAX_BATCH_IDS = 100;
const BATCH_CONCURRENCY = 8;

/**
 * `GET /sandboxes/{id}/metrics?start=&end=` (SDK `getMetrics`): `SandboxMetric[]`. dnah keeps
 * no metrics history: every call measures the sandbox once, now, and answers that one sample
 * — or none when `[start, end]` (unix seconds) does not include now. 404 code when unknown.
 * `GET /sandboxes/metrics?sandbox_ids=a,b` (v1, older SDKs and the CLI): one sample per known
 * running or paused sandbox, keyed by id; unknown ids are left out.
 */
export async function metricsRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  app.get<{ Params: { id: string } }>("/sandboxes/:id/metrics", { config: { e2bApi: true } }, async (req) => {
    const qs = new URLSearchParams(req.url.slice(req.url.indexOf("?") + 1));
    const start = unixSeconds(qs, "start");
    const end = unixSeconds(qs, "end");
    if (start !== undefined && end !== undefined && start > end)
      throw new InvalidArgumentError("'start' must not be after 'end'");
    const sample = await measure(ctx, req.params.id);
    const t = Math.floor(sample.at.getTime() / 1000);
    if ((start !== undefined && t < start) || (end !== undefined && t > end)) return [];
    return [sandboxMetricJson(sample)];
  });
  app.get("/sandboxes/metrics", { config: { e2bApi: true } }, async (req) => {
    const qs = new URLSearchParams(req.url.slice(req.url.indexOf("?") + 1));
    const ids = [
      ...new Set(
        qs
          .getAll("sandbox_ids")
          .flatMap((v) => v.split(","))
          .filter((v) => v !== ""),
      ),
    ];
    if (ids.length === 0) throw new InvalidArgumentError("'sandbox_ids' is required");
    if (ids.length > MAX_BATCH_IDS)
      throw new InvalidArgumentError(`'sandbox_ids' takes at most ${MAX_BATCH_IDS} ids`);
    const sandboxes: Record<string, ReturnType<typeof sandboxMetricJson>> = {};
    for (let i = 0; i < ids.length; i += BATCH_CONCURRENCY) {
      await Promise.all(
        ids.slice(i, i + BATCH_CONCURRENCY).map(async (id) => {
          try {
            sandboxes[id] = sandboxMetricJson(await measure(ctx, id));
            ctx.deps.activity.touch(id); // counted ("handler" in ACTIVITY_ROUTES): ids from the query
          } catch (err) {
            if (err instanceof SandboxNotFoundError || err instanceof FailedPreconditionError) return;
            if (err instanceof InvalidArgumentError) return; // not a sandbox id: unknown
            throw err;
          }
        }),
      );
    }
    return { sandboxes };
  });
}

async function measure(ctx: E2bContext, sandboxId: string) {
  const { metrics: m } = await getSandboxMetrics(
    ctx.deps,
    create(GetSandboxMetricsRequestSchema, { sandboxId }),
  );
  if (m === undefined) throw new Error(`no metrics for sandbox ${sandboxId}`);
  return { ...m, at: m.timestamp !== undefined ? timestampDate(m.timestamp) : new Date() };
}

/** A unix-seconds query parameter (the SDK sends `Math.round(date / 1000)`). */
function unixSeconds(qs: URLSearchParams, key: string): number | undefined {
  const all = qs.getAll(key);
  if (all.length === 0 || all[0] === "") return undefined;
  if (all.length > 1) throw new InvalidArgumentError(`query parameter '${key}' must be given once`);
  const v = all[0]!;
  if (!/^-?\d{1,12}$/.test(v)) throw new InvalidArgumentError(`'${key}' must be a unix time in seconds`);
  return Number(v);
}
