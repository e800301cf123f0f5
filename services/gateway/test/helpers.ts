import { randomBytes } from "node:crypto";
import { createServiceClient, type Db, openDb, silentLogger } from "@dnah/platform";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { createGateway, defaultConfig, type Gateway, type GatewayConfig } from "../src/index.js";

/** The local Postgres every service suite uses (one fresh schema per suite). */
export const TEST_DATABASE_URL =
  process.env.DNAH_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
/** Nothing listens on port 1: connections are refused at once. */
export const UNREACHABLE_URL = "http://127.0.0.1:1";

export interface TestDb {
  db: Db;
  schema: string;
  /** Drops the suite's schema and closes the pool. */
  drop(): Promise<void>;
}

export async function freshDb(prefix: string): Promise<TestDb> {
  const schema = `${prefix}_${randomBytes(6).toString("hex")}`;
  const db = await openDb({ url: TEST_DATABASE_URL, schema, maxConnections: 4 });
  return {
    db,
    schema,
    async drop() {
      try {
        await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await db.close();
      }
    },
  };
}

export function testConfig(overrides: Partial<GatewayConfig> = {}): GatewayConfig {
  return {
    ...defaultConfig,
    host: "127.0.0.1",
    port: 0,
    schedulerUrl: UNREACHABLE_URL,
    snapshotUrl: UNREACHABLE_URL,
    ...overrides,
  };
}

/** A gateway on a free port whose scheduler cannot be reached. */
export async function startGateway(db: Db, overrides: Partial<GatewayConfig> = {}): Promise<Gateway> {
  const cfg = testConfig(overrides);
  const gateway = await createGateway(cfg, {
    db,
    logger: silentLogger(),
    scheduler: createServiceClient(SchedulerService, cfg.schedulerUrl),
  });
  await gateway.start();
  return gateway;
}
