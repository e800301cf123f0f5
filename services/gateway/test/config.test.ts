import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ConfigError } from "@dnah/platform";
import { configFromEnv, requestsPerWindow } from "../src/config.js";

describe("configFromEnv", () => {
  it("applies the defaults", () => {
    const cfg = configFromEnv({ DNAH_SCHEDULER_URL: "http://127.0.0.1:3001" });
    assert.equal(cfg.host, "0.0.0.0");
    assert.equal(cfg.port, 3000);
    assert.equal(cfg.databaseUrl, undefined);
    assert.equal(cfg.apiKey, undefined);
    assert.equal(cfg.execOutputLimitBytes, 16 * 1024 * 1024);
    assert.equal(cfg.fileLimitBytes, 100 * 1024 * 1024);
    assert.equal(cfg.execTimeoutMs, 60_000);
    assert.equal(cfg.createTimeoutMs, 60_000);
    assert.ok(Object.isFrozen(cfg));
  });

  it("reads every setting", () => {
    const cfg = configFromEnv({
      DNAH_GATEWAY_HOST: "127.0.0.1",
      DNAH_PORT: "8080",
      DATABASE_URL: "postgres://x@db/y",
      DNAH_DB_SCHEMA: "gw",
      DNAH_API_KEY: "k".repeat(20),
      DNAH_SCHEDULER_URL: "http://sched:3001",
      DNAH_EXEC_OUTPUT_LIMIT_BYTES: "2048",
      DNAH_FILE_LIMIT_BYTES: "4096",
      DNAH_EXEC_TIMEOUT_MS: "1000",
      DNAH_CREATE_TIMEOUT_MS: "180000",
      DNAH_ACTIVITY_FLUSH_MS: "250",
    });
    assert.deepEqual(
      [cfg.host, cfg.port, cfg.databaseUrl, cfg.dbSchema, cfg.apiKey, cfg.schedulerUrl],
      ["127.0.0.1", 8080, "postgres://x@db/y", "gw", "k".repeat(20), "http://sched:3001"],
    );
    assert.deepEqual([cfg.execOutputLimitBytes, cfg.fileLimitBytes, cfg.execTimeoutMs], [2048, 4096, 1000]);
    assert.equal(cfg.createTimeoutMs, 180_000);
    assert.equal(cfg.activityFlushMs, 250);
    assert.equal(configFromEnv({ DNAH_SCHEDULER_URL: "http://s" }).activityFlushMs, 2000);
  });

  it("reads the API key from DNAH_API_KEY_FILE", () => {
    const dir = mkdtempSync(join(tmpdir(), "gw-cfg-"));
    const file = join(dir, "key");
    try {
      writeFileSync(file, "file-key-0123456789abcdef\n");
      const cfg = configFromEnv({ DNAH_SCHEDULER_URL: "http://s", DNAH_API_KEY_FILE: file });
      assert.equal(cfg.apiKey, "file-key-0123456789abcdef");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("lists every problem at once and never echoes the key", () => {
    try {
      configFromEnv({
        DNAH_PORT: "99999",
        DNAH_DB_SCHEMA: "Bad-Schema",
        DNAH_API_KEY: "short secret",
        DNAH_EXEC_TIMEOUT_MS: "soon",
        DNAH_ACTIVITY_FLUSH_MS: "0",
      });
      assert.fail("expected a ConfigError");
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      const text = err.problems.join("\n");
      for (const name of [
        "DNAH_PORT",
        "DNAH_DB_SCHEMA",
        "DNAH_API_KEY",
        "DNAH_SCHEDULER_URL",
        "DNAH_EXEC_TIMEOUT_MS",
        "DNAH_ACTIVITY_FLUSH_MS",
      ]) {
        assert.match(text, new RegExp(name));
      }
      assert.ok(!text.includes("short secret"));
    }
  });

  it("reads the rate limit: 6000 per minute over 60 s windows by default, 0 turns it off", () => {
    const d = configFromEnv({ DNAH_SCHEDULER_URL: "http://s" });
    assert.deepEqual([d.rateLimitPerMinute, d.rateLimitWindowMs, requestsPerWindow(d)], [6000, 60_000, 6000]);
    const short = configFromEnv({
      DNAH_SCHEDULER_URL: "http://s",
      DNAH_RATE_LIMIT_PER_MINUTE: "360",
      DNAH_RATE_LIMIT_WINDOW_MS: "5000",
    });
    // The per-minute rate is kept; the window only sets the burst: 30 requests per 5 s.
    assert.equal(requestsPerWindow(short), 30);
    const off = configFromEnv({ DNAH_SCHEDULER_URL: "http://s", DNAH_RATE_LIMIT_PER_MINUTE: "0" });
    assert.equal(off.rateLimitPerMinute, 0);
  });

  it("refuses a rate-limit window too short to hold one request, and bad numbers", () => {
    assert.throws(
      () =>
        configFromEnv({
          DNAH_SCHEDULER_URL: "http://s",
          DNAH_RATE_LIMIT_PER_MINUTE: "30",
          DNAH_RATE_LIMIT_WINDOW_MS: "1000",
        }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /DNAH_RATE_LIMIT_WINDOW_MS: .*use at least 2000/.test(err.problems.join("\n")),
    );
    assert.throws(
      () =>
        configFromEnv({
          DNAH_SCHEDULER_URL: "http://s",
          DNAH_RATE_LIMIT_PER_MINUTE: "-1",
          DNAH_RATE_LIMIT_WINDOW_MS: "10",
        }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /DNAH_RATE_LIMIT_PER_MINUTE/.test(err.problems.join("\n")) &&
        /DNAH_RATE_LIMIT_WINDOW_MS/.test(err.problems.join("\n")),
    );
  });
});
