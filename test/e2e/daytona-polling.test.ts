import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Daytona, DaytonaNotFoundError, type Sandbox } from "@daytonaio/sdk";
import { startTestStack, type TestStack } from "./harness.js";

/**
 * The lifecycle with the SDK's socket.io events off (`useDeprecatedPolling`, what
 * `DAYTONA_USE_DEPRECATED_POLLING=true` sets): every state wait is then answered by polling
 * `GET /sandbox/{id}`, so the states our API reports on their own must carry each wait.
 */
describe("Daytona SDK with socket.io events off (polling)", () => {
  let s: TestStack;
  let daytona: Daytona;
  let sb: Sandbox | undefined;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    daytona = new Daytona({ apiKey: s.key, apiUrl: `${s.url}/api`, useDeprecatedPolling: true });
  });
  after(async () => {
    await sb?.delete().catch(() => undefined);
    await daytona?.[Symbol.asyncDispose]();
    await s?.close();
  });

  test("create → exec → files → stop → start (files kept) → archive → start → delete", async () => {
    sb = await daytona.create({ labels: { suite: "polling" } }, { timeout: 120 });
    assert.equal(sb.state, "started");
    const run = await sb.process.executeCommand("echo $((6 * 7))");
    assert.equal(run.exitCode, 0);
    assert.equal(run.result.trim(), "42");
    await sb.fs.uploadFile(Buffer.from("kept\n"), "/home/user/marker.txt");
    await sb.stop();
    assert.equal(sb.state, "stopped");
    await sb.start();
    assert.equal(sb.state, "started");
    assert.equal((await sb.fs.downloadFile("/home/user/marker.txt")).toString(), "kept\n");
    await sb.stop();
    await sb.archive();
    assert.equal((await daytona.get(sb.id)).state, "archived");
    await sb.start();
    assert.equal((await sb.process.executeCommand("cat /home/user/marker.txt")).result.trim(), "kept");
    const id = sb.id;
    await sb.delete();
    sb = undefined;
    await assert.rejects(daytona.get(id), (e: unknown) => e instanceof DaytonaNotFoundError);
  });
});
