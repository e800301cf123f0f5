import { Code, ConnectError } from "@connectrpc/connect";
import { createServiceClient, createServiceServer, type Logger, listen } from "@dnah/platform";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { FastifyInstance } from "fastify";
import type { VmmConfig } from "./config.js";
import type { VmmContext } from "./context.js";
import { vmmImpl, vmmRoutes } from "./routes.js";
import type { Runtime } from "./runtime/runtime.js";
import { selectRuntime } from "./runtime/select.js";
import { shareRoutes } from "./share/routes.js";
import { FolderArchive } from "./snapshot/archive/folder.js";
import { S3Archive } from "./snapshot/archive/s3.js";
import { ArchiveStore } from "./snapshot/archive.js";
import { SnapshotStore } from "./snapshot/store.js";
import { createTunnelHandler, TunnelRegistry } from "./tunnel/server.js";

export interface VmmOverrides {
  runtime?: Runtime;
}

export interface Vmm {
  start(): Promise<string>;
  readonly url: string;
  readonly impl: ReturnType<typeof vmmImpl>;
  readonly runtime: Runtime;
  readonly context: VmmContext;
  close(): Promise<void>;
}

/** The per-host VM manager: runtime, Connect API, tunnel, registration with the scheduler. */
export async function createVmm(cfg: VmmConfig, logger: Logger, overrides: VmmOverrides = {}): Promise<Vmm> {
  const runtime = overrides.runtime ?? (await selectRuntime(cfg, logger));
  const snapshots = new SnapshotStore(cfg.snapshotsDir, cfg.hostPath);
  const ctx: VmmContext = {
    cfg,
    logger,
    runtime,
    vms: new Map(),
    busy: new Set(),
    tunnels: new TunnelRegistry(),
    snapshots,
    archives: new ArchiveStore(
      cfg.archiveS3 !== undefined ? new S3Archive(cfg.archiveS3) : new FolderArchive(cfg.archiveDir),
      snapshots,
      logger,
    ),
  };
  runtime.onExit((id) => ctx.vms.delete(id));
  const impl = vmmImpl(ctx);
  let app: FastifyInstance | undefined;
  let url = "";
  let heartbeat: NodeJS.Timeout | undefined;

  const register = async () => {
    if (!cfg.schedulerUrl) return;
    const scheduler = createServiceClient(SchedulerService, cfg.schedulerUrl);
    const registerHost = () =>
      scheduler.registerHost({
        hostId: cfg.hostId,
        vmmUrl: cfg.advertiseUrl ?? url,
        runtime: runtime.name,
        capacitySandboxes: cfg.capacitySandboxes,
      });
    await registerHost();
    heartbeat = setInterval(() => {
      scheduler
        .heartbeat({ hostId: cfg.hostId, runningSandboxes: ctx.vms.size })
        .catch((err: unknown) => {
          // A scheduler that lost us (a reset database) answers NotFound: register again.
          if (ConnectError.from(err).code === Code.NotFound) return registerHost();
          throw err;
        })
        .catch((err: Error) => {
          logger.warn({ "host.id": cfg.hostId, err: err.message }, "heartbeat failed");
        });
    }, cfg.heartbeatIntervalMs);
    heartbeat.unref();
    logger.info({ "host.id": cfg.hostId, scheduler: cfg.schedulerUrl }, "registered with scheduler");
  };

  return {
    get url() {
      return url;
    },
    impl,
    runtime,
    context: ctx,
    async start() {
      const reclaimed = await runtime.reclaimOrphans(new Set());
      if (reclaimed.length > 0)
        logger.warn({ count: reclaimed.length }, "removed sandboxes left by an earlier run");
      app = await createServiceServer({ routes: vmmRoutes(ctx), logger });
      await shareRoutes(app, {
        shareDirOf: (id) => (ctx.vms.has(id) ? runtime.shareDir(id) : undefined),
        maxUploadBytes: cfg.shareUploadMaxBytes,
        logger,
      });
      app.server.on(
        "upgrade",
        createTunnelHandler(
          (id) => {
            const rec = ctx.vms.get(id);
            return rec && { vsockPath: rec.vm.vsockPath, paused: runtime.isPaused(id) };
          },
          logger,
          ctx.tunnels,
        ),
      );
      url = await listen(app, cfg.listenHost, cfg.listenPort);
      await register();
      logger.info({ "host.id": cfg.hostId, url, runtime: runtime.name }, "vmm listening");
      return url;
    },
    async close() {
      if (heartbeat) clearInterval(heartbeat);
      await app?.close();
      const ids = [...ctx.vms.keys()];
      await Promise.all(
        ids.map((id) =>
          runtime
            .destroy(id)
            .catch((err: Error) => logger.error({ "sandbox.id": id, err: err.message }, "destroy failed")),
        ),
      );
      ctx.vms.clear();
      await runtime.dispose();
    },
  };
}
