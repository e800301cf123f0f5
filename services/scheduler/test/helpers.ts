import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type ControlKey,
  createServiceClient,
  createServiceServer,
  type Db,
  listen,
  loadOrCreateControlKey,
  migrate,
  openDb,
  silentLogger,
  vmmAuthorization,
} from "@dnah/platform";
import { type CreateVmRequest, VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import pg from "pg";
import { configFromEnv, type SchedulerConfig } from "../src/config.js";

export const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
export const MIGRATIONS_DIR = fileURLToPath(new URL("../src/db/migrations/", import.meta.url));

export type DbKind = "postgres" | "pglite";

/** A database in a schema of its own (Postgres) or in memory (PGlite); drop() removes it. */
export async function freshDb(
  kind: DbKind,
  maxConnections = 10,
): Promise<{ db: Db; schema: string; drop(): Promise<void> }> {
  const schema = `scheduler_test_${randomBytes(6).toString("hex")}`;
  if (kind === "pglite") {
    const db = await openDb({ schema });
    return { db, schema, drop: () => db.close() };
  }
  const db = await openDb({ url: DATABASE_URL, schema, maxConnections });
  return {
    db,
    schema,
    async drop() {
      await db.close();
      const c = new pg.Client({ connectionString: DATABASE_URL });
      await c.connect();
      try {
        await c.query(`DROP SCHEMA ${schema} CASCADE`);
      } finally {
        await c.end();
      }
    },
  };
}

export async function migratedDb(kind: DbKind, maxConnections = 10) {
  const fresh = await freshDb(kind, maxConnections);
  await migrate(fresh.db, "scheduler", MIGRATIONS_DIR);
  return fresh;
}

/** Defaults from an empty environment, with a free port and no pool unless asked. */
export function testConfig(over: Partial<SchedulerConfig> = {}): SchedulerConfig {
  return Object.freeze({ ...configFromEnv({}), port: 0, poolSize: 0, poolRefillIntervalMs: 20, ...over });
}

export const logger = silentLogger();

export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Asserts (for assert.rejects) that a call failed with this Connect code and message. */
export function connectError(code: Code, message?: RegExp) {
  return (err: unknown): boolean => {
    if (!(err instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${String(err)}`);
    if (err.code !== code)
      throw new Error(`expected ${Code[code]}, got ${Code[err.code]}: ${err.rawMessage}`);
    if (message && !message.test(err.rawMessage)) throw new Error(`unexpected message: ${err.rawMessage}`);
    return true;
  };
}

/**
 * TEST DOUBLE for the VMM: a VmmService that only records what it is asked and pretends to
 * boot. It exists to check the scheduler's own decisions; the real vmm is covered end to end
 * elsewhere.
 */
export interface VmmTestDouble {
  url: string;
  calls: { method: "createVm" | "deleteVm" | "configureVm"; sandboxId: string; req: unknown }[];
  /** Sandboxes it "runs". */
  vms: Set<string>;
  /** The next this-many CreateVm calls fail with Unavailable. */
  failCreates: number;
  /** The next this-many DeleteVm calls fail with Unavailable. */
  failDeletes: number;
  count(method: "createVm" | "deleteVm" | "configureVm"): number;
  close(): Promise<void>;
}

export async function startVmmTestDouble(): Promise<VmmTestDouble> {
  const double: Omit<VmmTestDouble, "url" | "close"> = {
    calls: [],
    vms: new Set(),
    failCreates: 0,
    failDeletes: 0,
    count: (method) => double.calls.filter((c) => c.method === method).length,
  };
  const app = await createServiceServer({
    logger,
    routes: (router) =>
      router.service(VmmService, {
        createVm(req: CreateVmRequest) {
          double.calls.push({ method: "createVm", sandboxId: req.sandboxId, req });
          if (double.failCreates > 0) {
            double.failCreates -= 1;
            throw new ConnectError("test double: boot failed", Code.Unavailable);
          }
          double.vms.add(req.sandboxId);
          return {
            vm: { sandboxId: req.sandboxId, templateId: req.templateId, runtime: "double", bootMs: 1 },
          };
        },
        deleteVm(req) {
          double.calls.push({ method: "deleteVm", sandboxId: req.sandboxId, req });
          if (double.failDeletes > 0) {
            double.failDeletes -= 1;
            throw new ConnectError("test double: delete failed", Code.Unavailable);
          }
          double.vms.delete(req.sandboxId);
          return {};
        },
        configureVm(req) {
          double.calls.push({ method: "configureVm", sandboxId: req.sandboxId, req });
          return {};
        },
      }),
  });
  const url = await listen(app, "127.0.0.1", 0);
  return Object.assign(double, { url, close: () => app.close() });
}

/** Runs a service's main.ts in a child process (stderr shown, stdout dropped). */
export function spawnService(main: string, env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", main], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
    stdio: ["ignore", "ignore", "inherit"],
  });
}

/** SIGTERM, then waits for the exit (nothing when it already ended). */
export async function stopService(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}

/** Polls `ready` every 100 ms for up to 60 s; fails at once when the child exits. */
export async function waitUntil(
  what: string,
  child: ChildProcess,
  ready: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!(await ready().catch(() => false))) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`${what} did not start within 60 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A vmm client that signs its calls with the control plane's key (as the scheduler does). */
export function signedVmmClient(db: Pick<Db, "query">, vmmUrl: string) {
  let key: ControlKey | undefined;
  return createServiceClient(VmmService, vmmUrl, [
    (next) => async (req) => {
      key ??= await loadOrCreateControlKey(db);
      req.header.set("authorization", vmmAuthorization(key, vmmUrl));
      return next(req);
    },
  ]);
}
