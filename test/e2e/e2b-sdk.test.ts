import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  AuthenticationError,
  CommandExitError,
  NotFoundError,
  Sandbox,
  SandboxError,
  SandboxNotFoundError,
} from "e2b";
import { Sandbox as Sandbox250 } from "e2b-2-50";
import { startTestStack, type TestStack } from "./harness.js";

/** The real, unmodified `e2b` SDK against dnah's gateway (control API + sandbox URL). */
describe("e2b SDK 2.51.0", () => {
  let s: TestStack;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
  let sbx: Sandbox;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "2" });
    opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
    sbx = await Sandbox.create({
      ...opts,
      metadata: { suite: "e2b-sdk" },
      envs: { GLOBAL_VAR: "from-create" },
    });
  });
  after(async () => {
    await s?.close();
  });

  test("create answers an id and an envd access token", async () => {
    assert.match(sbx.sandboxId, /^[a-z0-9]+$/);
    assert.equal(await sbx.isRunning(), true);
  });

  test("commands.run: stdout and exit code", async () => {
    const r = await sbx.commands.run("echo hello");
    assert.equal(r.stdout, "hello\n");
    assert.equal(r.exitCode, 0);
  });

  test("a failing command throws CommandExitError with its exit code", async () => {
    await assert.rejects(sbx.commands.run("echo oops >&2; exit 3"), (err: unknown) => {
      assert.ok(err instanceof CommandExitError, String(err));
      assert.equal(err.exitCode, 3);
      assert.equal(err.stderr, "oops\n");
      return true;
    });
  });

  test("envs, cwd and the create-time envVars", async () => {
    const r = await sbx.commands.run('echo "$FOO $GLOBAL_VAR"; pwd', { envs: { FOO: "bar" }, cwd: "/tmp" });
    assert.equal(r.stdout, "bar from-create\n/tmp\n");
  });

  test("files: write/read text and bytes, list, exists", async () => {
    const dir = "/tmp/e2b-files";
    await sbx.files.write(`${dir}/hello.txt`, "hello files\n");
    assert.equal(await sbx.files.read(`${dir}/hello.txt`), "hello files\n");
    const bytes = new Uint8Array(256 * 1024);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >> 8)) & 0xff;
    await sbx.files.write(`${dir}/bin.dat`, bytes.buffer);
    const back = await sbx.files.read(`${dir}/bin.dat`, { format: "bytes" });
    assert.equal(back.length, bytes.length);
    assert.ok(Buffer.from(back).equals(Buffer.from(bytes)), "binary round trip");
    const names = (await sbx.files.list(dir)).map((e) => e.name).sort();
    assert.deepEqual(names, ["bin.dat", "hello.txt"]);
    assert.equal(await sbx.files.exists(`${dir}/hello.txt`), true);
    assert.equal(await sbx.files.exists(`${dir}/nope.txt`), false);
  });

  test("getInfo and list", async () => {
    const info = await Sandbox.getInfo(sbx.sandboxId, opts);
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.equal(info.templateId, "base");
    assert.equal(info.state, "running");
    assert.deepEqual(info.metadata, { suite: "e2b-sdk" });
    assert.ok(info.endAt.getTime() > info.startedAt.getTime());
    const items = await Sandbox.list({ ...opts, query: { metadata: { suite: "e2b-sdk" } } }).nextItems();
    assert.deepEqual(
      items.map((i) => i.sandboxId),
      [sbx.sandboxId],
    );
    const none = await Sandbox.list({ ...opts, query: { metadata: { suite: "other" } } }).nextItems();
    assert.deepEqual(none, []);
  });

  test("setTimeout and connect", async () => {
    await sbx.setTimeout(600_000);
    const info = await Sandbox.getInfo(sbx.sandboxId, opts);
    assert.ok(info.endAt.getTime() > Date.now() + 590_000);
    const again = await Sandbox.connect(sbx.sandboxId, opts);
    assert.equal((await again.commands.run("echo again")).stdout, "again\n");
  });

  test("the sandbox URL refuses requests without the access token", async () => {
    const res = await fetch(`${s.url}/process.Process/List`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "e2b-sandbox-id": sbx.sandboxId,
        "e2b-sandbox-port": "49983",
      },
      body: "{}",
    });
    assert.equal(res.status, 401);
    // envd's own refusal, not the gateway's API-key check.
    assert.match(((await res.json()) as { message: string }).message, /valid access token/);
    const bad = await fetch(`${s.url}/health`, { headers: { "e2b-sandbox-id": "Not-Valid" } });
    assert.equal(bad.status, 400);
    const unknown = await fetch(`${s.url}/health`, { headers: { "e2b-sandbox-id": "nosuchsandbox" } });
    assert.equal(unknown.status, 502);
    assert.deepEqual(await unknown.json(), {
      sandboxId: "nosuchsandbox",
      message: "The sandbox was not found",
      code: 502,
    });
  });

  test("natively created sandboxes (no access token) are not served on the sandbox URL", async () => {
    const r = await s.json<{ sandboxId: string }>("/v1/sandboxes", { method: "POST", body: "{}" });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const native = r.body.sandboxId;
    const res = await fetch(`${s.url}/health`, { headers: { "e2b-sandbox-id": native } });
    assert.equal(res.status, 502);
    await assert.rejects(Sandbox.connect(native, opts), /400: .*not created through the E2B API/);
    const exec = await s.json<{ stdout: string }>(`/v1/sandboxes/${native}/exec`, {
      method: "POST",
      body: JSON.stringify({ command: "echo native" }),
    });
    assert.equal(exec.body.stdout, "native\n");
    assert.equal(await Sandbox.kill(native, opts), true);
  });

  test("a wrong API key is an AuthenticationError", async () => {
    await assert.rejects(Sandbox.create({ ...opts, apiKey: "e2b_wrong" }), AuthenticationError);
  });

  test("an unknown template is a 404 SandboxError", async () => {
    await assert.rejects(Sandbox.create("no-such-template", opts), (err: unknown) => {
      assert.ok(err instanceof SandboxError, String(err));
      assert.equal((err as SandboxError & { statusCode?: number }).statusCode, 404);
      assert.match(err.message, /^404: Template no-such-template not found/);
      return true;
    });
  });

  test("kill: not running, getInfo throws SandboxNotFoundError, kill again is false", async () => {
    await sbx.kill();
    assert.equal(await sbx.isRunning(), false);
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId, opts), (err: unknown) => {
      assert.ok(err instanceof SandboxNotFoundError, String(err));
      assert.ok(err instanceof NotFoundError);
      return true;
    });
    assert.equal(await Sandbox.kill(sbx.sandboxId, opts), false);
    await assert.rejects(Sandbox.connect(sbx.sandboxId, opts), SandboxNotFoundError);
  });

  test("e2b 2.50.0 (v1 routes): create → run → kill", async () => {
    const old = await Sandbox250.create(opts);
    assert.equal((await old.commands.run("echo old")).stdout, "old\n");
    const listed = await Sandbox250.list(opts).nextItems();
    assert.ok(listed.some((i) => i.sandboxId === old.sandboxId));
    await old.kill();
    assert.equal(await old.isRunning(), false);
  });
});
