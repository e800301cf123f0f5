import assert from "node:assert/strict";
import { readFileSync, statfsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { startTestStack, type TestStack } from "./harness.js";

describe("isolation between sandboxes and from the host", () => {
  let s: TestStack;
  let a: string;
  let b: string;
  // Root inside the sandbox: the strongest position a sandboxed process can get.
  const run = async (sandbox: string, command: string, user = "root") =>
    (
      await s.json<{ exitCode: number; stdout: string; stderr: string }>(`/v1/sandboxes/${sandbox}/exec`, {
        method: "POST",
        body: JSON.stringify({ command, timeoutMs: 20_000, user }),
      })
    ).body;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0" });
    a = (await s.json<{ sandboxId: string }>("/v1/sandboxes", { method: "POST", body: "{}" })).body.sandboxId;
    b = (await s.json<{ sandboxId: string }>("/v1/sandboxes", { method: "POST", body: "{}" })).body.sandboxId;
  });
  after(async () => {
    await s?.close();
  });

  test("a process in A cannot reach B's agent socket", async () => {
    const bSocket = `${s.stateDir}/sandboxes/${b}/vsock/vsock.sock`;
    const probe = `import socket,sys
for p in sys.argv[1:]:
    try:
        c=socket.socket(socket.AF_UNIX); c.settimeout(2); c.connect(p); c.sendall(b"CONNECT 49983\\n"); print("REACHED", p, c.recv(16))
    except Exception as e:
        print("refused", type(e).__name__)`;
    const r = await run(a, `python3 -c '${probe}' ${bSocket} /run/dnah/../../${bSocket}`);
    assert.equal(r.stdout.includes("REACHED"), false, r.stdout);
    assert.match(r.stdout, /refused/);
    // A sees only its own agent socket, and its unprivileged user not even that.
    assert.equal((await run(a, "ls /run/dnah")).stdout, "vsock.sock\n");
    assert.notEqual((await run(a, "ls /run/dnah", "user")).exitCode, 0);
  });

  test("a process in A cannot reach any host service port", async () => {
    const ports = [new URL(s.url).port, new URL(s.schedulerUrl).port, new URL(s.vmmUrl).port, "5432"];
    for (const port of ports) {
      const r = await run(
        a,
        `curl -sS -m 3 -o /dev/null -w '%{http_code}' http://127.0.0.1:${port}/ ; echo " exit=$?"`,
      );
      assert.match(r.stdout, /exit=(7|28)/, `port ${port}: ${r.stdout} ${r.stderr}`);
    }
    // No interface but loopback: no route anywhere.
    const ifaces = (await run(a, "tail -n +3 /proc/net/dev | cut -d: -f1")).stdout.trim().split(/\s+/);
    assert.deepEqual(ifaces, ["lo"]);
  });

  test("A cannot fill the host's disk through its share, which is nosuid,nodev on the host", async () => {
    // The share is written directly (a bind mount): only a filesystem of its own bounds it.
    const free = () => statfsSync(s.stateDir).bavail * statfsSync(s.stateDir).bsize;
    const before = free();
    const r = await run(
      a,
      "fallocate -l 64G /mnt/dnah-share/fill; echo rc=$?; df -B1 --output=size /mnt/dnah-share | tail -1; rm -f /mnt/dnah-share/fill",
      "user",
    );
    assert.match(r.stdout, /^rc=1\n/, r.stdout);
    assert.match(r.stderr, /No space left on device/);
    assert.ok(Number(r.stdout.split("\n")[1]) < 64 * 1024 ** 3, `share size ${r.stdout}`);
    assert.ok(before - free() < 256 * 1024 ** 2, `the host lost ${before - free()} bytes to A's share`);
    // The mount the share folder is in (the deepest one holding its path).
    const mount = readFileSync("/proc/self/mounts", "utf8")
      .split("\n")
      .filter((l) => {
        const at = l.split(" ")[1] ?? "";
        return at !== "" && `${s.shareDir(a)}/`.startsWith(`${at}/`);
      })
      .sort((x, y) => (y.split(" ")[1] ?? "").length - (x.split(" ")[1] ?? "").length)[0];
    assert.match(mount ?? "", /[ ,]nosuid[ ,]/, `share mount: ${mount}`);
    assert.match(mount ?? "", /[ ,]nodev[ ,]/, `share mount: ${mount}`);
  });

  test("A and B do not share files or processes", async () => {
    await run(a, "echo secret > /tmp/only-in-a");
    assert.notEqual((await run(b, "cat /tmp/only-in-a")).exitCode, 0);
    const psB = await run(b, "sleep 300 >/dev/null 2>&1 & echo $!");
    const pidB = psB.stdout.trim();
    assert.equal((await run(a, "ps -eo args")).stdout.includes("sleep 300"), false);
    assert.ok(pidB.length > 0);
  });
});
