import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Context } from "./context.js";
import {
  appendBuildLogs,
  type BuildOutcome,
  expireWaitingBuilds,
  finishBuild,
  forgetTemplateOnHosts,
  interruptStaleBuilds,
  type LogLine,
  loadTemplateFiles,
  touchBuilds,
} from "./db/template-queries.js";
import { type BuildSpec, contextHashes } from "./domain/templates.js";

/**
 * Template builds run here: each is one vmm.BuildTemplate stream, kept by the scheduler that
 * started it (ctx.runningBuilds), its log lines appended to the database in batches, its
 * outcome recorded once. A keeper touches the running builds' heartbeats and marks builds
 * whose scheduler died (no heartbeat for BUILD_STALE_MS) as interrupted.
 */

/** How often this scheduler touches its builds (and looks for abandoned ones). */
const HEARTBEAT_MS = 3_000;
/** A build untouched this long lost its scheduler. */
export const BUILD_STALE_MS = 15_000;
export const INTERRUPTED = "interrupted (scheduler restarted)";
/** A reserved build whose steps did not come within this long is given up. */
const WAITING_EXPIRES_MS = 3_600_000;
const NEVER_STARTED = "reserved but never started (no steps came within an hour)";
/** Lines kept per build; after that one "log truncated" line. */
export const MAX_LOG_LINES = 10_000;
const MAX_LINE_CHARS = 8_192;
const FLUSH_MS = 250;
const FLUSH_LINES = 500;
/** How long a cancel waits for its build's stream to end and its outcome to be recorded. */
const CANCEL_WAIT_MS = 10_000;

/** Why this scheduler stopped a build's stream. */
type StopReason =
  | { kind: "cancel" }
  /** The scheduler is shutting down. */
  | { kind: "interrupt" }
  /** Its row is no longer 'building' (cancelled through another scheduler, or deleted). */
  | { kind: "gone" };

export interface BuildJob {
  buildId: string;
  templateId: string;
  hostId: string;
  vmmUrl: string;
  spec: BuildSpec;
}

const fieldsOf = (b: Pick<BuildJob, "buildId" | "templateId" | "hostId">) => ({
  "template.id": b.templateId,
  "build.id": b.buildId,
  "host.id": b.hostId,
});

/** Starts a build's stream in the background; it records its own outcome. */
export function startBuild(ctx: Context, job: BuildJob): void {
  const abort = new AbortController();
  const done = runBuild(ctx, job, abort.signal)
    .catch((err: unknown) => ctx.logger.error({ ...fieldsOf(job), err }, "template build runner failed"))
    .finally(() => ctx.runningBuilds.delete(job.buildId));
  ctx.runningBuilds.set(job.buildId, { abort, done });
}

/**
 * Stops a build this scheduler runs and waits (bounded) until its outcome is recorded.
 * False when this scheduler does not run it.
 */
export async function stopBuild(ctx: Context, buildId: string, why: StopReason["kind"]): Promise<boolean> {
  const running = ctx.runningBuilds.get(buildId);
  if (running === undefined) return false;
  running.abort.abort({ kind: why } satisfies StopReason);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    running.done,
    new Promise((r) => {
      timer = setTimeout(r, CANCEL_WAIT_MS);
    }),
  ]);
  clearTimeout(timer);
  return true;
}

async function runBuild(ctx: Context, job: BuildJob, signal: AbortSignal): Promise<void> {
  const fields = fieldsOf(job);
  const log = new BuildLog(ctx, job.buildId);
  log.add("info", `building on host '${job.hostId}'`);
  let outcome: BuildOutcome | undefined;
  try {
    const hashes = contextHashes(job.spec.steps);
    const files = await loadTemplateFiles(ctx.db, hashes);
    const missing = hashes.find((h) => !files.has(h));
    if (missing !== undefined)
      throw new BuildRefused(`build context ${missing} is no longer stored; upload it again`);
    const stream = ctx.vmm(job.vmmUrl).buildTemplate(
      {
        templateId: job.templateId,
        baseTemplateId: job.spec.baseTemplateId,
        steps: job.spec.steps,
        ...(job.spec.start !== null ? { start: job.spec.start } : {}),
        files: Object.fromEntries(files),
        force: job.spec.force,
      },
      { signal, timeoutMs: ctx.cfg.templateBuildTimeoutMs },
    );
    let result: BuildOutcome | undefined;
    for await (const m of stream) {
      if (m.log !== undefined)
        log.add(m.log.level || "info", m.log.message, m.log.at ? timestampDate(m.log.at) : new Date());
      if (m.result !== undefined)
        result = {
          status: "ready",
          result: {
            buildKey: m.result.buildKey,
            cachedSteps: m.result.cachedSteps,
            builtSteps: m.result.builtSteps,
            sizeBytes: m.result.sizeBytes.toString(),
            durationMs: m.result.durationMs,
          },
        };
    }
    outcome = result ?? { status: "error", reason: "the build host ended the build without a result" };
  } catch (err) {
    const stop = signal.aborted ? (signal.reason as StopReason) : undefined;
    if (stop?.kind === "cancel") outcome = { status: "cancelled", reason: "cancelled" };
    else if (stop?.kind === "interrupt") outcome = { status: "error", reason: INTERRUPTED };
    else if (stop?.kind === "gone") outcome = undefined;
    else outcome = { status: "error", reason: failureReason(ctx, job, err) };
  }
  if (outcome?.status === "ready")
    log.add(
      "info",
      `ready: ${outcome.result.cachedSteps} step(s) from the cache, ${outcome.result.builtSteps} built`,
    );
  else if (outcome !== undefined) log.add(outcome.status === "cancelled" ? "warn" : "error", outcome.reason);
  await log.close();
  if (outcome === undefined) return;
  const final = outcome;
  const row = await ctx.db.transaction((tx) => finishBuild(tx, job.buildId, final));
  ctx.templateCache.clear();
  if (row === undefined) return;
  ctx.logger.info(
    { ...fields, status: row.status, reason: row.reason || undefined },
    "template build finished",
  );
  if (row.status === "ready")
    ctx.background("removal of a rebuilt template's older copies", fields, () => retireOtherCopies(ctx, job));
}

/** A build that cannot start, for a reason meant for the caller. */
class BuildRefused extends Error {}

/** Codes whose message the vmm writes for the user (a step that failed, a bad step, …). */
const USER_CODES = new Set([
  Code.InvalidArgument,
  Code.FailedPrecondition,
  Code.NotFound,
  Code.ResourceExhausted,
  Code.OutOfRange,
]);

function failureReason(ctx: Context, job: BuildJob, err: unknown): string {
  if (err instanceof BuildRefused) return err.message;
  const ce = ConnectError.from(err);
  ctx.logger.warn({ ...fieldsOf(job), err }, "template build failed");
  if (USER_CODES.has(ce.code) && ce.rawMessage !== "") return ce.rawMessage;
  if (ce.code === Code.DeadlineExceeded)
    return `the build did not finish within ${Math.round(ctx.cfg.templateBuildTimeoutMs / 1000)} s`;
  if (ce.code === Code.Unavailable) return `the build host '${job.hostId}' became unavailable; build again`;
  return `the build host '${job.hostId}' failed (${Code[ce.code] ?? "Unknown"})`;
}

/**
 * Once a template is rebuilt on one host, other hosts that still report it hold an older
 * build: they forget it (their sandboxes keep running), so new sandboxes start from the new one.
 */
async function retireOtherCopies(ctx: Context, job: BuildJob): Promise<void> {
  const { rows } = await ctx.db.query<{ id: string; vmm_url: string }>(
    "SELECT id, vmm_url FROM hosts WHERE $1 = ANY(templates) AND id <> $2",
    [job.templateId, job.hostId],
  );
  for (const h of rows) {
    await ctx
      .vmm(h.vmm_url)
      .deleteTemplate({ templateId: job.templateId }, { timeoutMs: ctx.cfg.vmmCallTimeoutMs });
    await forgetTemplateOnHosts(ctx.db, job.templateId, h.id);
    ctx.logger.info({ ...fieldsOf(job), "host.id": h.id }, "older copy of a rebuilt template removed");
  }
}

/**
 * A build's log on its way to the database: lines are batched (every FLUSH_MS or FLUSH_LINES),
 * cut at MAX_LINE_CHARS, and at most MAX_LOG_LINES are kept, then one "log truncated" line. A
 * batch the database refused is tried again with the next one.
 */
class BuildLog {
  private pending: LogLine[] = [];
  private seq = 0;
  private accepted = 0;
  private truncated = false;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly ctx: Context,
    private readonly buildId: string,
  ) {}

  add(level: string, message: string, at = new Date()): void {
    if (this.truncated) return;
    if (this.accepted >= MAX_LOG_LINES) {
      this.truncated = true;
      this.pending.push({
        at,
        level: "warn",
        message: `log truncated: only the first ${MAX_LOG_LINES} lines are kept`,
      });
    } else {
      this.accepted += 1;
      const text = message.replaceAll("\0", "");
      this.pending.push({
        at,
        level: ["info", "warn", "error"].includes(level) ? level : "info",
        message: text.length > MAX_LINE_CHARS ? `${text.slice(0, MAX_LINE_CHARS)}…` : text,
      });
    }
    if (this.pending.length >= FLUSH_LINES) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), FLUSH_MS);
  }

  /** Writes what is pending (after any write in progress); never rejects. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.writing = this.writing.then(async () => {
      const batch = this.pending;
      if (batch.length === 0) return;
      this.pending = [];
      try {
        await appendBuildLogs(this.ctx.db, this.buildId, this.seq, batch);
        this.seq += batch.length;
      } catch (err) {
        this.pending = [...batch, ...this.pending];
        this.ctx.logger.warn(
          { "build.id": this.buildId, err, lines: batch.length },
          "build log not written; retrying",
        );
      }
    });
    return this.writing;
  }

  /** The last write: what is still pending after it is dropped (and said so in the logs). */
  async close(): Promise<void> {
    await this.flush();
    if (this.pending.length > 0) {
      await this.flush();
      if (this.pending.length > 0)
        this.ctx.logger.error(
          { "build.id": this.buildId, lines: this.pending.length },
          "build log lines lost",
        );
    }
  }
}

export interface BuildKeeper {
  /** Marks abandoned builds, then keeps this scheduler's builds alive every few seconds. */
  start(): Promise<void>;
  /** Stops every build this scheduler runs (recorded as interrupted), then the heartbeats. */
  close(): Promise<void>;
}

export function createBuildKeeper(ctx: Context): BuildKeeper {
  let timer: NodeJS.Timeout | undefined;
  let ticking: Promise<void> | undefined;

  async function sweep(): Promise<void> {
    const marked = [
      ...(await interruptStaleBuilds(ctx.db, BUILD_STALE_MS, INTERRUPTED, [...ctx.runningBuilds.keys()])),
      ...(await expireWaitingBuilds(ctx.db, WAITING_EXPIRES_MS, NEVER_STARTED)),
    ];
    if (marked.length === 0) return;
    ctx.templateCache.clear();
    for (const b of marked)
      ctx.logger.warn(
        { "template.id": b.templateId, "build.id": b.id },
        "template build abandoned: marked error",
      );
  }

  async function tick(): Promise<void> {
    try {
      const ids = [...ctx.runningBuilds.keys()];
      const alive = await touchBuilds(ctx.db, ids);
      for (const id of ids)
        if (!alive.has(id)) ctx.runningBuilds.get(id)?.abort.abort({ kind: "gone" } satisfies StopReason);
      await sweep();
    } catch (err) {
      ctx.logger.warn({ err }, "template build heartbeat failed");
    }
  }

  return {
    async start() {
      await sweep();
      timer = setInterval(() => {
        ticking ??= tick().finally(() => {
          ticking = undefined;
        });
      }, HEARTBEAT_MS);
      timer.unref();
    },
    async close() {
      clearInterval(timer);
      await ticking;
      await Promise.all([...ctx.runningBuilds.keys()].map((id) => stopBuild(ctx, id, "interrupt")));
    },
  };
}
