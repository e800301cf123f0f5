import assert from "node:assert/strict";
import { it } from "node:test";
import { ConfigError } from "@dnah/platform";
import { configFromEnv } from "../src/config.js";

it("has documented defaults and is frozen", () => {
  const cfg = configFromEnv({});
  assert.equal(cfg.databaseUrl, undefined);
  assert.equal(cfg.host, "127.0.0.1");
  assert.equal(cfg.port, 7001);
  assert.equal(cfg.poolSize, 2);
  assert.equal(cfg.hostDeadAfterMs, 15_000);
  assert.equal(cfg.poolRefillIntervalMs, 500);
  assert.equal(cfg.snapshotUrl, "http://127.0.0.1:7003");
  assert.equal(cfg.snapshotCallTimeoutMs, 120_000);
  assert.equal(cfg.reaperIntervalMs, 1_000);
  assert.equal(cfg.reaperLeaseMs, 600_000);
  assert.equal(cfg.reaperBatch, 20);
  assert.ok(Object.isFrozen(cfg));
});

it("reads every setting", () => {
  const cfg = configFromEnv({
    DATABASE_URL: "postgres://u:p@db/x",
    DNAH_DB_SCHEMA: "sched",
    DNAH_SCHEDULER_PORT: "0",
    DNAH_POOL_SIZE: "5",
    DNAH_HOST_DEAD_AFTER_MS: "3000",
    DNAH_SNAPSHOT_URL: "http://snap.internal:7003/",
    DNAH_SNAPSHOT_CALL_TIMEOUT_MS: "5000",
    DNAH_REAPER_INTERVAL_MS: "250",
    DNAH_REAPER_LEASE_MS: "60000",
    DNAH_REAPER_BATCH: "5",
  });
  assert.equal(cfg.databaseUrl, "postgres://u:p@db/x");
  assert.equal(cfg.dbSchema, "sched");
  assert.equal(cfg.port, 0);
  assert.equal(cfg.poolSize, 5);
  assert.equal(cfg.hostDeadAfterMs, 3000);
  assert.equal(cfg.snapshotUrl, "http://snap.internal:7003");
  assert.equal(cfg.snapshotCallTimeoutMs, 5000);
  assert.equal(cfg.reaperIntervalMs, 250);
  assert.equal(cfg.reaperLeaseMs, 60_000);
  assert.equal(cfg.reaperBatch, 5);
});

it("lists every problem at once and never echoes the database URL", () => {
  try {
    configFromEnv({
      DATABASE_URL: "mysql://root:hunter2@db",
      DNAH_DB_SCHEMA: "Bad-Schema",
      DNAH_POOL_SIZE: "-1",
      DNAH_SCHEDULER_PORT: "http",
      DNAH_SNAPSHOT_URL: "ftp://x",
      DNAH_REAPER_BATCH: "0",
    });
    assert.fail("expected a ConfigError");
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.problems.length, 6);
    assert.ok(!err.message.includes("hunter2"));
  }
});
