import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Daytona, DaytonaError, DaytonaNotFoundError, type Sandbox } from "@daytonaio/sdk";
import { startTestStack, type TestStack } from "./harness.js";

/**
 * Daytona SDK `sandbox.pause()` and `sandbox.fork()` against dnah (jail runtime): pause keeps
 * the sandbox (its files and its running processes) and `start` resumes it; a fork is a new
 * started sandbox with the source's files that then diverges from it, the source running on.
 */
const created: Sandbox[] = [];
const tag = randomBytes(4).toString("hex");

describe("Daytona SDK pause and fork", () => {
  let s: TestStack;
  let daytona: Daytona;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0" });
    daytona = new Daytona({ apiKey: s.key, apiUrl: `${s.url}/api` });
  });
  after(async () => {
    for (const sb of created) await sb.delete().catch(() => undefined);
    await daytona?.[Symbol.asyncDispose]();
    await s?.close();
  });

  const run = async (sb: Sandbox, cmd: string) => {
    const r = await sb.process.executeCommand(cmd);
    assert.equal(r.exitCode, 0, r.result);
    return r.result.trim();
  };

  test("pause → paused (toolbox refused) → start → the same files and the same process", async () => {
    const sb = await daytona.create({ name: `pause-${tag}` }, { timeout: 120 });
    created.push(sb);
    await run(sb, "echo kept > /home/user/kept.txt");
    const pid = await run(sb, "nohup sleep 600 >/dev/null 2>&1 & echo $!");
    await sb.pause();
    assert.equal(sb.state, "paused");
    assert.equal((await daytona.get(sb.id)).state, "paused");
    await assert.rejects(sb.process.executeCommand("true"), (e: unknown) => e instanceof DaytonaError);
    await sb.start(60);
    assert.equal(sb.state, "started");
    assert.equal(await run(sb, "cat /home/user/kept.txt"), "kept");
    // The jail's pause is a freeze: the process is the same one afterwards.
    assert.equal(await run(sb, `kill -0 ${pid} && echo alive`), "alive");
  });

  test("fork: a started clone with the source's files, its own id and name, diverging; the source runs on", async () => {
    const src = await daytona.create({ name: `src-${tag}`, labels: { suite: tag } }, { timeout: 120 });
    created.push(src);
    await run(src, "echo original > /home/user/f.txt");
    const clone = await src.fork({ name: `clone-${tag}` }, 120);
    created.push(clone);
    assert.notEqual(clone.id, src.id);
    assert.equal(clone.name, `clone-${tag}`);
    assert.equal(clone.state, "started");
    assert.equal(clone.labels?.suite, tag);
    assert.equal(await run(clone, "cat /home/user/f.txt"), "original");
    assert.notEqual(await run(clone, "hostname"), await run(src, "hostname"));
    await run(clone, "echo clone > /home/user/f.txt");
    await run(src, "echo source > /home/user/g.txt");
    assert.equal(await run(src, "cat /home/user/f.txt"), "original");
    assert.equal(await run(clone, "test -e /home/user/g.txt && echo yes || echo no"), "no");
    assert.equal((await daytona.get(src.id)).state, "started");
    // The clone is a sandbox like any other: it lists, and its name is taken.
    const listed: string[] = [];
    for await (const sb of daytona.list({ labels: { suite: tag } })) listed.push(sb.id);
    assert.deepEqual(listed.sort(), [src.id, clone.id].sort());
    await assert.rejects(src.fork({ name: `clone-${tag}` }, 60), /already exists/);
  });

  test("fork of a deleted sandbox is Daytona's not-found", async () => {
    const sb = await daytona.create({}, { timeout: 120 });
    await sb.delete();
    await assert.rejects(sb.fork({}, 30), (e: unknown) => e instanceof DaytonaNotFoundError);
  });
});
