import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { SandboxService } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { sandboxClient, startTestStack, type TestStack } from "./harness.js";

describe("core over Connect: dnah.sandbox.v1.SandboxService", () => {
  let s: TestStack;
  let client: ReturnType<typeof createClient<typeof SandboxService>>;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    client = sandboxClient(s);
  });
  after(async () => {
    await s?.close();
  });

  test("create → exec → stream → files → delete", async () => {
    const { sandbox } = await client.createSandbox({ metadata: { via: "connect" } });
    assert.ok(sandbox);
    const id = sandbox.sandboxId;
    assert.equal(sandbox.runtime, "jail");

    const r = await client.exec({ sandboxId: id, command: "echo out; echo err >&2; exit 7" });
    assert.equal(r.exitCode, 7);
    assert.equal(new TextDecoder().decode(r.stdout), "out\n");
    assert.equal(new TextDecoder().decode(r.stderr), "err\n");

    const withStdin = await client.exec({ sandboxId: id, command: "wc -c", stdin: new Uint8Array(5000) });
    assert.equal(new TextDecoder().decode(withStdin.stdout).trim(), "5000");

    const kinds: string[] = [];
    let out = "";
    for await (const ev of client.execStream({ sandboxId: id, command: "echo a; sleep 0.2; echo b" })) {
      kinds.push(ev.event.case ?? "");
      if (ev.event.case === "stdout") out += new TextDecoder().decode(ev.event.value);
      if (ev.event.case === "exit") assert.equal(ev.event.value.exitCode, 0);
    }
    assert.equal(kinds[0], "pid");
    assert.equal(kinds.at(-1), "exit");
    assert.equal(out, "a\nb\n");

    const content = new Uint8Array([0, 255, 10, 13, 0, 1, 2]);
    await client.writeFile({ sandboxId: id, path: "/tmp/x/bin.dat", content });
    assert.deepEqual((await client.readFile({ sandboxId: id, path: "/tmp/x/bin.dat" })).content, content);
    const list = await client.listFiles({ sandboxId: id, path: "/tmp/x" });
    assert.deepEqual(
      list.entries.map((e) => [e.name, e.type, Number(e.sizeBytes)]),
      [["bin.dat", "file", 7]],
    );

    const listed = await client.listSandboxes({ metadata: { via: "connect" } });
    assert.deepEqual(
      listed.sandboxes.map((x) => x.sandboxId),
      [id],
    );
    await client.deleteSandbox({ sandboxId: id });
    await assert.rejects(
      client.getSandbox({ sandboxId: id }),
      (e: unknown) => ConnectError.from(e).code === Code.NotFound,
    );
  });

  test("errors come back as Connect codes", async () => {
    await assert.rejects(
      client.getSandbox({ sandboxId: "nosuchsandbox" }),
      (e: unknown) => ConnectError.from(e).code === Code.NotFound,
    );
    await assert.rejects(
      client.createSandbox({ templateId: "nope" }),
      (e: unknown) => ConnectError.from(e).code === Code.NotFound,
    );
    const anon = createClient(SandboxService, createConnectTransport({ baseUrl: s.url, httpVersion: "1.1" }));
    await assert.rejects(
      anon.listSandboxes({}),
      (e: unknown) => ConnectError.from(e).code === Code.Unauthenticated,
    );
  });
});
