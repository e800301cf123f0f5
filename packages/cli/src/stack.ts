import { createGateway, type Gateway, configFromEnv as gatewayConfig } from "@dnah/gateway";
import { createLogger, createServiceClient, type Db, type Env, type Logger, openDb } from "@dnah/platform";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { createScheduler, configFromEnv as schedulerConfig } from "@dnah/scheduler";
import { createSnapshotService, configFromEnv as snapshotConfig } from "@dnah/snapshot";
import { createVmm, configFromEnv as vmmConfig } from "@dnah/vmm";

export interface DevStack {
  /** The gateway's base URL (what users and SDKs talk to). */
  readonly url: string;
  /** The API key to use, when the gateway created or was given one. */
  readonly apiKey: string | undefined;
  /** How sandboxes are isolated on this host. */
  readonly isolation: string;
  readonly runtime: string;
  /** The host folder a sandbox of this host sees at `/mnt/dnah-share`. */
  shareDir(sandboxId: string): string;
  readonly db: Db;
  readonly schedulerUrl: string;
  readonly vmmUrl: string;
  readonly snapshotUrl: string;
  /** The gateway's Fastify app: tests walk its real route table and read its server timeouts. */
  readonly gatewayApp: Gateway["app"];
  /** Stops accepting work, deletes warm sandboxes, then every service. */
  close(): Promise<void>;
}

/**
 * Every service in one process, wired by the same Connect clients they use when they run
 * apart. Internal services listen on 127.0.0.1 (random ports unless set); the gateway on
 * DNAH_PORT (3000).
 */
export async function startDevStack(env: Env, logger?: Logger): Promise<DevStack> {
  const level = env.DNAH_LOG_LEVEL ?? "info";
  const log = (name: string) => logger?.child({ service: name }) ?? createLogger(name, { level });
  const internal = {
    DNAH_SCHEDULER_PORT: "0",
    DNAH_VMM_PORT: "0",
    DNAH_SNAPSHOT_PORT: "0",
    DNAH_SCHEDULER_HOST: "127.0.0.1",
    DNAH_VMM_HOST: "127.0.0.1",
    DNAH_SNAPSHOT_HOST: "127.0.0.1",
  };
  const merged: Env = { ...internal, ...env };
  // Parsed now so configuration errors surface before anything starts; parsed again below
  // with the snapshot service's URL once it listens.
  schedulerConfig(merged);
  const snapCfg = snapshotConfig(merged);
  const db = await openDb({
    url: merged.DATABASE_URL,
    pgliteDir: merged.DNAH_PGLITE_DIR,
    schema: merged.DNAH_DB_SCHEMA,
  });

  // What started so far, stopped (newest first) when a later part fails to start: a failed
  // start must not leave servers and timers behind (a test's process would never exit).
  const started: (() => Promise<unknown>)[] = [() => db.close()];
  const starting = async <T>(part: () => Promise<T>, stop: (t: T) => Promise<unknown>): Promise<T> => {
    try {
      const t = await part();
      started.unshift(() => stop(t));
      return t;
    } catch (err) {
      for (const undo of started)
        await undo().catch((e: unknown) =>
          log("dev").warn({ err: e }, "a part could not stop after a failed start"),
        );
      throw err;
    }
  };

  const snapshot = createSnapshotService(snapCfg, { logger: log("snapshot") });
  const snapshotUrl = await starting(
    () => snapshot.start(),
    () => snapshot.close(),
  );
  const withSnapshot: Env = { ...merged, DNAH_SNAPSHOT_URL: snapshotUrl };
  const scheduler = createScheduler(schedulerConfig(withSnapshot), { db, logger: log("scheduler") });
  const schedulerUrl = await starting(
    () => scheduler.start(),
    () => scheduler.close(),
  );
  const vmm = await starting(
    () => createVmm(vmmConfig({ ...merged, DNAH_SCHEDULER_URL: schedulerUrl }), log("vmm")),
    (v) => v.close(),
  );
  const vmmUrl = await starting(
    () => vmm.start(),
    async () => {},
  );
  const gateway = await starting(
    () =>
      createGateway(gatewayConfig({ ...withSnapshot, DNAH_SCHEDULER_URL: schedulerUrl }), {
        db,
        scheduler: createServiceClient(SchedulerService, schedulerUrl),
        logger: log("gateway"),
      }),
    (g) => g.close(),
  );
  const url = await starting(
    () => gateway.start(),
    async () => {},
  );

  let closing: Promise<void> | undefined;
  return {
    url,
    apiKey: gateway.apiKey,
    isolation: vmm.runtime.isolation,
    runtime: vmm.runtime.name,
    shareDir: (sandboxId) => vmm.runtime.shareDir(sandboxId),
    db,
    schedulerUrl,
    vmmUrl,
    snapshotUrl,
    gatewayApp: gateway.app,
    close() {
      closing ??= (async () => {
        await gateway.close();
        await scheduler.drainPool();
        await scheduler.close();
        await vmm.close();
        await snapshot.close();
        await db.close();
      })();
      return closing;
    },
  };
}
