import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  AuthenticationError,
  CommandExitError,
  FileNotFoundError,
  InvalidArgumentError,
  NotFoundError,
  Sandbox,
  SandboxNotFoundError,
  TimeoutError,
} from "e2b";
import { startTestStack, type TestStack } from "./harness.js";

/**
 * Each error class of the `e2b` SDK a user can hit, produced by the server condition it names:
 * the SDK decides the class from our status codes and Connect codes, so each assertion fails
 * if the gateway or the agent answers the condition differently.
 */
describe("e2b SDK error classes come from the matching server conditions", () => {
  let s: TestStack;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
  let sbx: Sandbox;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
    sbx = await Sandbox.create(opts);
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await s?.close();
  });

  test("InvalidArgumentError: a request the agent refuses as malformed", async () => {
    // Reading a folder as a file: envd answers 400.
    await assert.rejects(sbx.files.read("/tmp"), (e: unknown) => e instanceof InvalidArgumentError);
    // A cwd that does not exist: the agent refuses the Start with invalid_argument.
    await assert.rejects(
      sbx.commands.run("true", { cwd: "/no/such/dir" }),
      (e: unknown) => e instanceof InvalidArgumentError,
    );
  });

  test("NotFoundError / FileNotFoundError: a missing path", async () => {
    await assert.rejects(sbx.files.read("/no/such/file"), (e: unknown) => e instanceof FileNotFoundError);
    await assert.rejects(sbx.files.getInfo("/no/such/file"), (e: unknown) => e instanceof NotFoundError);
  });

  test("SandboxNotFoundError: an unknown sandbox id on the control API", async () => {
    await assert.rejects(Sandbox.getInfo("nosuchsandbox0000000", opts), SandboxNotFoundError);
  });

  test("AuthenticationError: a wrong API key", async () => {
    await assert.rejects(Sandbox.list({ ...opts, apiKey: "e2b_wrong" }).nextItems(), AuthenticationError);
  });

  test("TimeoutError: a command outliving its timeoutMs", async () => {
    await assert.rejects(sbx.commands.run("sleep 30", { timeoutMs: 1_000 }), TimeoutError);
  });

  test("CommandExitError: a non-zero exit", async () => {
    await assert.rejects(
      sbx.commands.run("exit 3"),
      (e: unknown) => e instanceof CommandExitError && e.exitCode === 3,
    );
  });
});
