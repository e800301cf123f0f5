import type { Client } from "@connectrpc/connect";
import { type ControlKey, createServiceClient, type Db, type Logger, vmmAuthorization } from "@dnah/platform";
import { SnapshotService } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { SchedulerConfig } from "./config.js";
import type { TemplateRow } from "./db/queries.js";

export type VmmClient = Client<typeof VmmService>;
export type VmmClientFactory = (vmmUrl: string) => VmmClient;
export type SnapshotClient = Client<typeof SnapshotService>;

export interface Clock {
  /** Milliseconds, for durations and backoff. Timestamps stored in the database use its now(). */
  now(): number;
}

/** Everything an RPC handler or background loop needs; tests build it with overrides. */
export interface Context {
  readonly cfg: SchedulerConfig;
  /** Throws until the scheduler has started (the database is opened in start()). */
  readonly db: Db;
  readonly logger: Logger;
  readonly clock: Clock;
  /** The vmm at `vmmUrl`, one client per URL. */
  vmm(vmmUrl: string): VmmClient;
  /** The snapshot service: signs manifests of new snapshots, verifies them before a restore. */
  readonly snapshot: SnapshotClient;
  /** Wakes the warm-pool refiller (after a claim or when capacity appears). */
  kickRefill(): void;
  /** The control plane's key pair (from the database, loaded once): signs every call to a vmm. */
  controlKey(): Promise<ControlKey>;
  /**
   * Templates found recently, by id or alias. Only hits are kept, briefly, so a create skips
   * one database round trip while a new or changed template still shows within seconds.
   */
  readonly templateCache: Map<string, { row: TemplateRow; at: number }>;
  /**
   * Template builds this process is running (their vmm streams), by build id: cancelling one
   * aborts its stream; `done` settles once its outcome is recorded.
   */
  readonly runningBuilds: Map<string, { abort: AbortController; done: Promise<void> }>;
  /**
   * Runs best-effort work (cleanup after a failure) without making the caller wait; failures
   * are logged with `what` and the fields. close() waits for it.
   */
  background(what: string, fields: Record<string, unknown>, fn: () => Promise<unknown>): void;
}

export interface ContextParts {
  cfg: SchedulerConfig;
  getDb: () => Db;
  logger: Logger;
  clock?: Clock | undefined;
  vmmClient?: VmmClientFactory | undefined;
  /** Defaults to a Connect client for `cfg.snapshotUrl`. */
  snapshotClient?: SnapshotClient | undefined;
  kickRefill: () => void;
  /** Loads (once) the control plane's key from the database. */
  getControlKey: () => Promise<ControlKey>;
}

export function createContext(parts: ContextParts): Context & { settle(): Promise<void> } {
  const factory =
    parts.vmmClient ??
    ((url: string) =>
      createServiceClient(VmmService, url, [
        (next) => async (req) => {
          req.header.set("authorization", vmmAuthorization(await parts.getControlKey(), url));
          return next(req);
        },
      ]));
  const clients = new Map<string, VmmClient>();
  const pending = new Set<Promise<unknown>>();
  const logger = parts.logger;
  return {
    cfg: parts.cfg,
    get db() {
      return parts.getDb();
    },
    logger,
    clock: parts.clock ?? { now: () => Date.now() },
    vmm(vmmUrl) {
      let c = clients.get(vmmUrl);
      if (c === undefined) {
        c = factory(vmmUrl);
        clients.set(vmmUrl, c);
      }
      return c;
    },
    snapshot: parts.snapshotClient ?? createServiceClient(SnapshotService, parts.cfg.snapshotUrl),
    kickRefill: parts.kickRefill,
    controlKey: parts.getControlKey,
    templateCache: new Map(),
    runningBuilds: new Map(),
    background(what, fields, fn) {
      const p: Promise<unknown> = Promise.resolve()
        .then(fn)
        .catch((err: unknown) => logger.warn({ ...fields, err }, `${what} failed`))
        .finally(() => pending.delete(p));
      pending.add(p);
    },
    /** Waits for every background task, including ones started while waiting. */
    async settle() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
    },
  };
}
