import type { ServiceImpl } from "@connectrpc/connect";
import { createLogger, createServiceServer, type Logger, listen } from "@dnah/platform";
import { SnapshotService } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { FastifyInstance } from "fastify";
import type { SnapshotConfig } from "./config.js";
import { createContext } from "./context.js";
import { type KeyStore, openKeyStore } from "./keys/store.js";
import { createRoutes } from "./routes.js";

export interface SnapshotOverrides {
  logger?: Logger;
  /** Clock for key creation times. */
  now?: () => Date;
}

export interface SnapshotServiceHandle {
  /** Loads (or creates) the keys and listens; resolves to the base URL. Only once. */
  start(): Promise<string>;
  /** The base URL once started. */
  readonly url: string | undefined;
  /** The handlers, for in-process use; Unavailable until start() resolves and after close(). */
  readonly impl: ServiceImpl<typeof SnapshotService>;
  /** Stops accepting, lets in-flight calls and a rotation in progress finish. Idempotent. */
  close(): Promise<void>;
}

export function createSnapshotService(
  cfg: SnapshotConfig,
  overrides: SnapshotOverrides = {},
): SnapshotServiceHandle {
  const logger = overrides.logger ?? createLogger("snapshot");
  let store: KeyStore | undefined;
  let app: FastifyInstance | undefined;
  let url: string | undefined;
  let state: "new" | "starting" | "running" | "closing" | "closed" = "new";
  let starting: Promise<string> | undefined;
  let closing: Promise<void> | undefined;

  // In-flight calls keep the store while closing; new connections are already refused.
  const ctx = createContext(logger, () => (state === "running" || state === "closing" ? store : undefined));
  const impl = createRoutes(ctx);

  async function doStart(): Promise<string> {
    try {
      store = await openKeyStore(cfg.keysDir, { logger, ...(overrides.now ? { now: overrides.now } : {}) });
      app = await createServiceServer({
        logger,
        routes: (router) => router.service(SnapshotService, impl),
      });
      url = await listen(app, cfg.host, cfg.port);
    } catch (err) {
      state = "closed";
      await app?.close();
      throw err;
    }
    state = "running";
    logger.info({ url, kid: store.activeKid() }, "snapshot service listening");
    return url;
  }

  async function doClose(): Promise<void> {
    // A close during start waits for it; start's own caller receives its error.
    await starting?.catch(() => undefined);
    if (state !== "running") {
      state = "closed";
      return;
    }
    state = "closing";
    try {
      // Fastify stops accepting at once and resolves when in-flight requests have finished.
      await app?.close();
      await store?.close();
    } finally {
      state = "closed";
    }
    logger.info("snapshot service closed");
  }

  return {
    get url() {
      return url;
    },
    impl,
    start() {
      if (state !== "new") return Promise.reject(new Error(`snapshot service cannot start: it is ${state}`));
      state = "starting";
      starting = doStart();
      return starting;
    },
    close() {
      closing ??= doClose();
      return closing;
    },
  };
}
