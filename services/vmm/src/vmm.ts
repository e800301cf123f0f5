import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { checkVmmToken, createServiceServer, type Logger, listen } from "@dnah/platform";
import type { FastifyInstance } from "fastify";
import type { VmmConfig } from "./config.js";
import type { VmmContext } from "./context.js";
import { startRegistration } from "./registration.js";
import { vmmImpl, vmmRoutes } from "./routes.js";
import type { Runtime } from "./runtime/runtime.js";
import { selectRuntime } from "./runtime/select.js";
import { shareRoutes } from "./share/routes.js";
import { shareWatchRoutes } from "./share/watch-routes.js";
import { FolderArchive } from "./snapshot/archive/folder.js";
import { S3Archive } from "./snapshot/archive/s3.js";
import { ArchiveStore } from "./snapshot/archive.js";
import { SnapshotStore } from "./snapshot/store.js";
import { TemplateBuilder } from "./template/builder.js";
import { createTunnelHandler, TunnelRegistry } from "./tunnel/server.js";

/**
 * Creates and restores still running at the drain bound get this long more: what they build
 * must exist before it can be destroyed, not be left mounted when the process ends.
 */
export const BUSY_GRACE_MS = 15_000;
const UNAVAILABLE = JSON.stringify({ code: "unavailable", message: "this vmm is shutting down" });

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
    // buildTemplate (rpc/build-template.ts) runs its builds through this.
    templates: new TemplateBuilder({
      cacheDir: cfg.cacheDir,
      mirror: cfg.debianMirror,
      cgroupParent: cfg.cgroupParent,
      hostPath: cfg.hostPath,
      memoryMib: cfg.templateBuildMemoryMib,
      cpuCount: 2,
      pidsMax: cfg.pidsMax,
      stepTimeoutMs: cfg.templateStepTimeoutMs,
    }),
  };
  runtime.onExit((id) => ctx.vms.delete(id));
  const impl = vmmImpl(ctx);
  let app: FastifyInstance | undefined;
  let url = "";
  let closing: Promise<void> | undefined;

  let stopRegistration: (() => void) | undefined;
  // Once joined, every request must carry a control-plane token for this vmm (vmm-auth.ts).
  let controlKey: Uint8Array | undefined;
  const audience = () => normalizedUrl(cfg.advertiseUrl ?? url);
  const refusal = (authorization: string | undefined): string | undefined => {
    if (controlKey === undefined)
      return cfg.schedulerUrl ? "this vmm has not joined its scheduler yet" : undefined;
    const m = /^Bearer (.+)$/.exec(authorization ?? "");
    return checkVmmToken(controlKey, audience(), m?.[1]);
  };
  const register = async () => {
    stopRegistration = await startRegistration({
      cfg,
      logger,
      runtime,
      url,
      sandboxIds: () => [...ctx.vms.keys()],
      onControlKey: (k) => {
        controlKey = k;
      },
      remove: async (id) => {
        if (!ctx.vms.has(id) || ctx.busy.has(id)) return;
        await runtime.destroy(id);
        ctx.vms.delete(id);
      },
    });
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
      const staleSteps = await ctx.templates.removeStale();
      if (staleSteps.length > 0)
        logger.warn({ folders: staleSteps }, "removed template build steps an earlier run left");
      const partial = await snapshots.removePartial();
      if (partial.length > 0)
        logger.warn({ folders: partial }, "removed snapshot folders an earlier run left half-written");
      app = await createServiceServer({
        routes: vmmRoutes(ctx),
        logger,
        bodyLimitBytes: cfg.templateRequestMaxBytes,
      });
      // Draining: a request that still arrives on a kept-alive connection starts nothing new.
      app.addHook("onRequest", async (_req, reply) => {
        if (closing === undefined) return;
        return reply.code(503).type("application/json").send(UNAVAILABLE);
      });
      app.addHook("onRequest", async (req, reply) => {
        const why = refusal(req.headers.authorization);
        if (why === undefined) return;
        logger.warn({ url: req.url.slice(0, 200), from: req.ip, why }, "unauthenticated request refused");
        return reply.code(401).type("application/json").send({ code: "unauthenticated", message: why });
      });
      await shareRoutes(app, {
        shareDirOf: (id) => (ctx.vms.has(id) ? runtime.shareDir(id) : undefined),
        maxUploadBytes: cfg.shareUploadMaxBytes,
        quotaBytes: cfg.shareQuotaBytes,
        sandboxIds: () => ctx.vms.keys(),
        logger,
      });
      await shareWatchRoutes(app, {
        shareDirOf: (id) => (ctx.vms.has(id) ? runtime.shareDir(id) : undefined),
        logger,
      });
      const tunnels = createTunnelHandler(
        (id) => {
          const rec = ctx.vms.get(id);
          return rec && { vsockPath: rec.vm.vsockPath, paused: runtime.isPaused(id) };
        },
        logger,
        ctx.tunnels,
      );
      app.server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
        if (closing !== undefined) {
          socket.end(
            `HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(UNAVAILABLE)}\r\nConnection: close\r\n\r\n${UNAVAILABLE}`,
          );
          return;
        }
        const why = refusal(req.headers.authorization);
        if (why === undefined) return tunnels(req, socket, head);
        logger.warn({ url: req.url?.slice(0, 200), why }, "unauthenticated tunnel refused");
        const body = JSON.stringify({ code: "unauthenticated", message: why });
        socket.end(
          `HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        );
      });
      url = await listen(app, cfg.listenHost, cfg.listenPort);
      await register();
      logger.info({ "host.id": cfg.hostId, url, runtime: runtime.name }, "vmm listening");
      return url;
    },
    close() {
      closing ??= drain();
      return closing;
    },
  };

  /**
   * Stops accepting; requests, tunnels and creates in flight get cfg.shutdownTimeoutMs to
   * finish (an exec through a tunnel completes); then what is left is cut and every sandbox
   * is destroyed, so nothing of them outlives the process. The scheduler learns from the
   * heartbeats (or their absence) that they are gone: lost, never ghosts.
   */
  async function drain(): Promise<void> {
    stopRegistration?.();
    const deadline = Date.now() + cfg.shutdownTimeoutMs;
    // Tunnels are byte pipes: an idle kept-alive one looks like a busy one, so all get the
    // bound (the gateway closes its own when it stops first).
    const cut = setTimeout(() => {
      const tunnels = ctx.tunnels.severAll();
      logger.warn({ timeoutMs: cfg.shutdownTimeoutMs, tunnels }, "drain bound reached: cutting connections");
      app?.server.closeAllConnections();
    }, cfg.shutdownTimeoutMs);
    cut.unref();
    try {
      await app?.close();
    } finally {
      clearTimeout(cut);
    }
    // Creates and restores whose caller went away are still running: let them finish first.
    for (const until = deadline + BUSY_GRACE_MS; ctx.busy.size > 0 && Date.now() < until; )
      await new Promise((r) => setTimeout(r, 100));
    const ids = [...ctx.vms.keys()];
    const failed: string[] = [];
    await Promise.all(
      ids.map((id) =>
        runtime.destroy(id).catch((err: Error) => {
          failed.push(id);
          logger.error({ "sandbox.id": id, err: err.message }, "destroy failed");
        }),
      ),
    );
    ctx.vms.clear();
    await runtime.dispose();
    if (ids.length > 0) logger.info({ destroyed: ids.length - failed.length }, "sandboxes destroyed");
    if (failed.length > 0)
      throw new Error(`${failed.length} sandbox(es) not destroyed: ${failed.join(", ")}`);
  }
}

/** A URL as the scheduler records a vmm's (origin and path, no trailing slash): the token audience. */
function normalizedUrl(u: string): string {
  try {
    const url = new URL(u);
    return url.origin + url.pathname.replace(/\/$/, "");
  } catch {
    return u;
  }
}
