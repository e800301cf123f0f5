import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Daytona, type Sandbox as DaytonaSandbox } from "@daytonaio/sdk";
import { Sandbox as E2bSandbox } from "e2b";
import { startTestStack, type TestStack } from "./harness.js";

/** 256 KiB with every byte value. */
function binary(): Buffer {
  const b = Buffer.alloc(256 * 1024);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

/**
 * The E2B envd `/files` route and the Daytona toolbox transfers on /mnt/dnah-share paths are
 * served from the share plane, not the guest agent: they work while the sandbox is paused (the
 * agent is frozen then), and what they wrote is in the guest after resume.
 */
describe("compat file routes through the share", () => {
  let s: TestStack;
  const native = (id: string, action: "pause" | "resume") =>
    s.api(`/v1/sandboxes/${id}/${action}`, { method: "POST" }).then((r) => r.status);
  const shareGet = (id: string, rel: string) => s.api(`/v1/sandboxes/${id}/share/${rel}`);

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0" });
  });
  after(async () => {
    await s?.close();
  });

  test("E2B SDK files.write / files.read on the share: while running, while paused, then in the guest", async () => {
    const opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
    const sbx = await E2bSandbox.create(opts);
    try {
      const data = binary();
      const info = await sbx.files.write("/mnt/dnah-share/e2b/deep/bin.dat", new Blob([data]));
      assert.deepEqual(
        { path: info.path, name: info.name, type: info.type },
        { path: "/mnt/dnah-share/e2b/deep/bin.dat", name: "bin.dat", type: "file" },
      );
      assert.ok(
        Buffer.from(await (await shareGet(sbx.sandboxId, "e2b/deep/bin.dat")).arrayBuffer()).equals(data),
      );
      assert.ok(
        Buffer.from(await sbx.files.read("/mnt/dnah-share/e2b/deep/bin.dat", { format: "bytes" })).equals(
          data,
        ),
      );

      assert.equal(await native(sbx.sandboxId, "pause"), 200);
      // The agent is frozen: a path outside the share cannot be read now...
      await assert.rejects(sbx.files.read("/etc/hostname", { requestTimeoutMs: 5_000 }));
      // ...the share can, both ways.
      await sbx.files.write("/mnt/dnah-share/e2b/paused.txt", "written while paused\n");
      assert.equal(await sbx.files.read("/mnt/dnah-share/e2b/paused.txt"), "written while paused\n");
      assert.ok(
        Buffer.from(await sbx.files.read("/mnt/dnah-share/e2b/deep/bin.dat", { format: "bytes" })).equals(
          data,
        ),
      );
      // envd's errors: a missing file is NotFound, the share's root is not a file.
      await assert.rejects(
        sbx.files.read("/mnt/dnah-share/e2b/nothing.txt"),
        (e: Error) => e.name === "FileNotFoundError",
      );

      assert.equal(await native(sbx.sandboxId, "resume"), 200);
      const r = await sbx.commands.run(
        "cat /mnt/dnah-share/e2b/paused.txt; sha256sum /mnt/dnah-share/e2b/deep/bin.dat",
      );
      const { createHash } = await import("node:crypto");
      assert.equal(
        r.stdout,
        `written while paused\n${createHash("sha256").update(data).digest("hex")}  /mnt/dnah-share/e2b/deep/bin.dat\n`,
      );
      // Owned by the sandbox's user, like an upload through envd.
      assert.equal((await sbx.commands.run("stat -c %U /mnt/dnah-share/e2b/paused.txt")).stdout, "user\n");
      // Outside the share the agent still serves the route.
      await sbx.files.write("/home/user/plain.txt", "plain");
      assert.equal(await sbx.files.read("/home/user/plain.txt"), "plain");
    } finally {
      await sbx.kill();
    }
  });

  test("E2B signed URLs (uploadUrl / downloadUrl) on the share work while paused", async () => {
    const opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
    const sbx = await E2bSandbox.create({ ...opts, secure: true });
    try {
      assert.equal(await native(sbx.sandboxId, "pause"), 200);
      const form = new FormData();
      form.append("file", new Blob(["signed while paused\n"]), "ignored-name.txt");
      const up = await fetch(await sbx.uploadUrl("/mnt/dnah-share/signed/up.txt"), {
        method: "POST",
        body: form,
      });
      assert.equal(up.status, 200, await up.clone().text());
      assert.deepEqual(await up.json(), [
        { path: "/mnt/dnah-share/signed/up.txt", name: "up.txt", type: "file" },
      ]);
      const down = await fetch(
        await sbx.downloadUrl("/mnt/dnah-share/signed/up.txt", { useSignatureExpiration: 120 }),
      );
      assert.equal(down.status, 200);
      assert.equal(await down.text(), "signed while paused\n");
      // An expired signature is not served from the share (nor by the frozen agent: no answer in time).
      const expired = await fetch(
        await sbx.downloadUrl("/mnt/dnah-share/signed/up.txt", { useSignatureExpiration: -30 }),
        { signal: AbortSignal.timeout(3_000) },
      ).then(
        (r) => r.status,
        () => "no answer",
      );
      assert.notEqual(expired, 200);
      assert.equal(await native(sbx.sandboxId, "resume"), 200);
    } finally {
      await sbx.kill();
    }
  });

  test("E2B: a request without the sandbox's access token is not served from the share", async () => {
    const opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
    const sbx = await E2bSandbox.create(opts);
    try {
      await sbx.files.write("/mnt/dnah-share/secret.txt", "s");
      const r = await fetch(`${s.url}/files?path=/mnt/dnah-share/secret.txt`, {
        headers: { "e2b-sandbox-id": sbx.sandboxId, "x-access-token": "wrong" },
      });
      assert.equal(r.status, 401);
    } finally {
      await sbx.kill();
    }
  });

  describe("Daytona SDK", () => {
    let daytona: Daytona;
    let sbx: DaytonaSandbox;
    before(async () => {
      daytona = new Daytona({ apiKey: s.key, apiUrl: `${s.url}/api` });
      sbx = await daytona.create();
    });
    after(async () => {
      await sbx?.delete().catch(() => {});
      await daytona?.[Symbol.asyncDispose]();
    });

    test("fs.uploadFile / downloadFile on the share go through the share plane, also while paused", async () => {
      const data = binary();
      await sbx.fs.uploadFile(data, "/mnt/dnah-share/dt/deep/bin.dat");
      assert.ok(Buffer.from(await (await shareGet(sbx.id, "dt/deep/bin.dat")).arrayBuffer()).equals(data));
      assert.ok((await sbx.fs.downloadFile("/mnt/dnah-share/dt/deep/bin.dat")).equals(data));
      const seen = await sbx.process.executeCommand(
        "cat /mnt/dnah-share/dt/deep/bin.dat | wc -c; stat -c %U /mnt/dnah-share/dt/deep/bin.dat",
      );
      assert.equal(seen.result, `${data.length}\nuser\n`);
      // A missing share file is an error part with Daytona's shape, like the agent's.
      const res = await sbx.fs.downloadFiles([{ source: "/mnt/dnah-share/dt/missing.txt" }]);
      assert.equal(res[0]?.errorDetails?.statusCode, 404);
      assert.equal(await native(sbx.id, "pause"), 200);
      // Paused (the agent frozen): both ways still work, and the guest sees the file after resume.
      await sbx.fs.uploadFile(Buffer.from("written while paused\n"), "/mnt/dnah-share/dt/paused.txt");
      assert.ok((await sbx.fs.downloadFile("/mnt/dnah-share/dt/deep/bin.dat")).equals(data));
      assert.equal(await native(sbx.id, "resume"), 200);
      const after = await sbx.process.executeCommand("cat /mnt/dnah-share/dt/paused.txt");
      assert.equal(after.result, "written while paused\n");
    });
  });
});
