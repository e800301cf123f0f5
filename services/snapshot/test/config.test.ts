import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError } from "@dnah/platform";
import { configFromEnv } from "../src/config.js";

describe("configFromEnv", () => {
  it("has defaults", () => {
    assert.deepEqual(configFromEnv({}), { keysDir: "/var/lib/dnah/keys", host: "127.0.0.1", port: 7003 });
  });

  it("puts keys under DNAH_STATE_DIR unless DNAH_SNAPSHOT_KEYS_DIR is set", () => {
    assert.equal(configFromEnv({ DNAH_STATE_DIR: "/srv/dnah" }).keysDir, "/srv/dnah/keys");
    assert.equal(
      configFromEnv({ DNAH_STATE_DIR: "/srv/dnah", DNAH_SNAPSHOT_KEYS_DIR: "/etc/dnah/keys" }).keysDir,
      "/etc/dnah/keys",
    );
  });

  it("reads host and port, and allows port 0", () => {
    const cfg = configFromEnv({ DNAH_SNAPSHOT_HOST: "0.0.0.0", DNAH_SNAPSHOT_PORT: "0" });
    assert.equal(cfg.host, "0.0.0.0");
    assert.equal(cfg.port, 0);
    assert.ok(Object.isFrozen(cfg));
  });

  it("rejects a bad port", () => {
    for (const port of ["65536", "-1", "http", "7003.5"]) {
      assert.throws(() => configFromEnv({ DNAH_SNAPSHOT_PORT: port }), ConfigError);
    }
  });
});
