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
import { createTunnelHandler, TunnelRegistry } from "./tunnel/server.js";

/** How long close() waits for creates and restores in flight (main.ts forces an exit at 30 s). */
const BUSY_WAIT_MS = 20_000;
/** How long close() lets requests in flight finish before it cuts their connections. */
const CLOSE_GRACE_MS = 5_000;

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
      app = await createServiceServer({ routes: vmmRoutes(ctx), logger });
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
    async close() {
      stopRegistration?.();
      // In-flight requests get a bound, then their connections are cut (a stalled client must
      // not hold the shutdown, and the sandboxes' destruction, for ever).
      const cut = setTimeout(() => app?.server.closeAllConnections(), CLOSE_GRACE_MS);
      cut.unref();
      await app?.close();
      clearTimeout(cut);
      // Creates and restores still running finish first (their caller may be gone), so what
      // they built is destroyed below rather than left mounted when the process ends.
      for (const deadline = Date.now() + BUSY_WAIT_MS; ctx.busy.size > 0 && Date.now() < deadline; )
        await new Promise((r) => setTimeout(r, 100));
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

/** A URL as the scheduler records a vmm's (origin and path, no trailing slash): the token audience. */
function normalizedUrl(u: string): string {
  try {
    const url = new URL(u);
    return url.origin + url.pathname.replace(/\/$/, "");
  } catch {
    return u;
  }
}
