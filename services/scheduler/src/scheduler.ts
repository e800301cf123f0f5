import { fileURLToPath } from "node:url";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type ControlKey,
  createLogger,
  createServiceServer,
  type Db,
  type Logger,
  listen,
  loadOrCreateControlKey,
  migrate,
  openDb,
} from "@dnah/platform";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { SchedulerConfig } from "./config.js";
import { type Clock, createContext, type SnapshotClient, type VmmClientFactory } from "./context.js";
import { markDeleted, setPoolTarget, takePoolForDrain } from "./db/queries.js";
import { createRefiller } from "./pool/refill.js";
import { destroy, logFields } from "./provision.js";
import { createReaper, type Reaper } from "./reaper/reaper.js";
import { createRoutes } from "./routes.js";
import { createBuildKeeper } from "./template-builds.js";

const MIGRATIONS_DIR = fileURLToPath(new URL("./db/migrations/", import.meta.url));
/** createServiceServer's own default: every request but a build context is far smaller. */
const DEFAULT_BODY_LIMIT_BYTES = 64 * 1024 * 1024;

export interface SchedulerOverrides {
  /** An open database (not closed by close()); otherwise one is opened from the config. */
  db?: Db;
  logger?: Logger;
  /** Builds the client for a host's vmm; called once per vmm URL. */
  vmmClient?: VmmClientFactory;
  /** The snapshot service client; otherwise one for `cfg.snapshotUrl`. */
  snapshotClient?: SnapshotClient;
  clock?: Clock;
}

export interface Scheduler {
  /** Opens and migrates the database, listens, starts the pool refiller; returns the URL. */
  start(): Promise<string>;
  /** The base URL once started. */
  readonly url: string;
  /** The service implementation, for in-process callers (usable once started). */
  readonly impl: ServiceImpl<typeof SchedulerService>;
  /**
   * Stops the refiller and deletes every warm sandbox (DeleteVm, then marked deleted);
   * returns how many. For `dnah dev` shutdown: a production restart keeps its pool.
   */
  drainPool(): Promise<number>;
  /** The lifecycle reaper (its loop runs once started); `runOnce` for tests and tools. */
  readonly reaper: Pick<Reaper, "runOnce">;
  /** Stops accepting calls, lets in-flight ones and boots finish, closes what it opened. */
  close(): Promise<void>;
}

export function createScheduler(cfg: SchedulerConfig, overrides: SchedulerOverrides = {}): Scheduler {
  const logger = overrides.logger ?? createLogger("scheduler", { level: cfg.logLevel });
  const ownsDb = overrides.db === undefined;
  let db: Db | undefined = overrides.db;
  let controlKey: Promise<ControlKey> | undefined;
  let app: Awaited<ReturnType<typeof createServiceServer>> | undefined;
  let url: string | undefined;
  let starting: Promise<string> | undefined;
  let closing: Promise<void> | undefined;

  const ctx = createContext({
    cfg,
    getDb: () => {
      if (db === undefined) throw new Error("scheduler is not started");
      return db;
    },
    logger,
    clock: overrides.clock,
    vmmClient: overrides.vmmClient,
    snapshotClient: overrides.snapshotClient,
    kickRefill: () => refiller.kick(),
    getControlKey: () => {
      controlKey ??= loadOrCreateControlKey(ctx.db).catch((err: unknown) => {
        controlKey = undefined; // a database hiccup: the next call tries again
        throw err;
      });
      return controlKey;
    },
  });
  const refiller = createRefiller(ctx);
  const reaper = createReaper(ctx);
  const builds = createBuildKeeper(ctx);
  const impl = createRoutes(ctx);

  async function doStart(): Promise<string> {
    db ??= await openDb({ url: cfg.databaseUrl, pgliteDir: cfg.pgliteDir, schema: cfg.dbSchema });
    const applied = await migrate(db, "scheduler", MIGRATIONS_DIR);
    if (applied.length > 0) logger.info({ migrations: applied }, "database migrated");
    await ctx.controlKey();
    if (!(await setPoolTarget(db, "base", cfg.poolSize))) {
      logger.warn("template 'base' does not exist: DNAH_POOL_SIZE not applied");
    }
    // Builds whose scheduler died are marked before anything else sees them.
    await builds.start();
    app = await createServiceServer({
      routes: (router) => router.service(SchedulerService, impl),
      logger,
      // PutTemplateFiles carries a whole build context tar.
      bodyLimitBytes: Math.max(DEFAULT_BODY_LIMIT_BYTES, cfg.templateContextMaxBytes + 1024 * 1024),
    });
    url = await listen(app, cfg.host, cfg.port);
    refiller.start();
    reaper.start();
    logger.info(
      { url, db: db.kind, poolSize: cfg.poolSize, reaperIntervalMs: cfg.reaperIntervalMs },
      "scheduler listening",
    );
    return url;
  }

  async function drainPool(): Promise<number> {
    await refiller.close();
    const rows = await takePoolForDrain(ctx.db, cfg.hostDeadAfterMs);
    await Promise.all(
      rows.map(async (row) => {
        try {
          await destroy(ctx, row, row.hostLive);
        } catch (err) {
          // Shutting down: nobody can retry, so the row goes and the host keeps a stray VM.
          logger.warn({ ...logFields(row), err }, "warm sandbox not deleted on its host while draining");
          await markDeleted(ctx.db, row.id);
        }
      }),
    );
    return rows.length;
  }

  async function doClose(): Promise<void> {
    await starting?.catch(() => {});
    await app?.close();
    // Running template builds end (recorded as interrupted): they may take many minutes.
    await builds.close();
    await reaper.close();
    await refiller.close();
    await ctx.settle();
    if (ownsDb) await db?.close();
  }

  return {
    start() {
      starting ??= doStart();
      return starting;
    },
    get url() {
      if (url === undefined) throw new Error("scheduler is not started");
      return url;
    },
    impl,
    reaper: { runOnce: (nowMs) => reaper.runOnce(nowMs) },
    drainPool,
    close() {
      closing ??= doClose();
      return closing;
    },
  };
}
