import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { type DevStack, startDevStack } from "@dnah/cli";
import { silentLogger } from "@dnah/platform";
import { Sandbox } from "e2b";

/** What `npm start` runs: no DATABASE_URL, so the embedded PGlite holds everything. */
describe("dnah dev on the embedded PGlite", () => {
  const suffix = randomBytes(4).toString("hex");
  const key = `dnah_pglite_${suffix}_0123456789`;
  const stateDir = `/tmp/dnah-pglite-${suffix}`;
  let s: DevStack;
  before(async () => {
    s = await startDevStack(
      {
        DNAH_API_KEY: key,
        DNAH_PORT: "0",
        DNAH_GATEWAY_HOST: "127.0.0.1",
        DNAH_STATE_DIR: stateDir,
        DNAH_CGROUP_PARENT: `dnah-pglite-${suffix}`,
        DNAH_POOL_SIZE: "1",
        DNAH_HOST_ID: `pglite-${suffix}`,
        ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
      },
      silentLogger(),
    );
  });
  after(async () => {
    await s?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  test("native create → exec → delete", async () => {
    assert.equal(s.db.kind, "pglite");
    const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
    const created = (await (
      await fetch(`${s.url}/v1/sandboxes`, { method: "POST", headers, body: "{}" })
    ).json()) as {
      sandboxId: string;
    };
    const exec = await fetch(`${s.url}/v1/sandboxes/${created.sandboxId}/exec`, {
      method: "POST",
      headers,
      body: JSON.stringify({ command: "echo pglite" }),
    });
    assert.equal(((await exec.json()) as { stdout: string }).stdout, "pglite\n");
    assert.equal(
      (await fetch(`${s.url}/v1/sandboxes/${created.sandboxId}`, { method: "DELETE", headers })).status,
      204,
    );
  });

  test("the E2B SDK works too, and the native API reaches its token-protected sandbox", async () => {
    const sbx = await Sandbox.create({ apiKey: key, apiUrl: s.url, sandboxUrl: s.url });
    assert.equal((await sbx.commands.run("echo e2b")).stdout, "e2b\n");
    const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
    const exec = await fetch(`${s.url}/v1/sandboxes/${sbx.sandboxId}/exec`, {
      method: "POST",
      headers,
      body: JSON.stringify({ command: "echo native" }),
    });
    assert.equal(exec.status, 200);
    assert.equal(((await exec.json()) as { stdout: string }).stdout, "native\n");
    await sbx.kill();
  });
});
