import assert from "node:assert/strict";
import { connect as h2connect } from "node:http2";
import { connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Process } from "@dnah/proto/process/process_pb";
import { silentLogger } from "../src/log.js";
import { AGENT_PORT } from "../src/ports.js";
import { listenHybridVsock } from "../src/vsock.js";
import { collect, dialGuest, startGuest, type TestGuest } from "./helpers.js";

let g: TestGuest;
before(async () => {
  g = await startGuest();
});
after(() => g.close());

/** Writes `data` raw and returns everything received until the guest closes. */
function raw(path: string, data: string, idleMs = 2000): Promise<{ received: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect(path);
    let received = "";
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ received, closed: false });
    }, idleMs);
    s.on("data", (d) => {
      received += d.toString("latin1");
    });
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      resolve({ received, closed: true });
    });
    s.on("connect", () => s.write(data));
  });
}

describe("hybrid vsock handshake", () => {
  test("a good line is answered OK <port>, and bytes after it reach the agent", async () => {
    const r = await raw(
      g.socketPath,
      "CONNECT 49983\nGET /health HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
    );
    assert.match(r.received, /^OK 49983\nHTTP\/1\.1 204 No Content\r\n/);
    assert.ok(r.closed);
  });

  for (const line of [
    "HELLO\n",
    "CONNECT\n",
    "CONNECT 0\n",
    "CONNECT 70000\n",
    "CONNECT 49983 extra\n",
    "connect 22\n",
  ]) {
    test(`malformed ${JSON.stringify(line)} → closed without a reply`, async () => {
      const r = await raw(g.socketPath, line);
      assert.deepEqual(r, { received: "", closed: true });
    });
  }

  test("a line longer than 32 bytes → closed", async () => {
    const r = await raw(g.socketPath, `CONNECT ${"1".repeat(40)}`);
    assert.deepEqual(r, { received: "", closed: true });
  });

  test("no line within the timeout → closed", async () => {
    const path = `${g.dir}/slow.sock`;
    const l = await listenHybridVsock({
      path,
      log: silentLogger,
      onConnection: (s) => s.destroy(),
      handshakeTimeoutMs: 200,
    });
    try {
      const r = await raw(path, "CONN", 3000);
      assert.deepEqual(r, { received: "", closed: true });
    } finally {
      await l.close();
    }
  });
});

describe("port forwarding", () => {
  let echo: Server;
  let port = 0;
  before(async () => {
    echo = createServer({ allowHalfOpen: true }, (s) => {
      const chunks: Buffer[] = [];
      s.on("data", (c: Buffer) => chunks.push(c));
      s.on("end", () => s.end(`echo:${Buffer.concat(chunks).toString()}`));
    });
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", () => r()));
    port = (echo.address() as { port: number }).port;
  });
  after(() => new Promise<void>((r) => echo.close(() => r())));

  test("any other port is piped to 127.0.0.1:<port>, half-close included", async () => {
    const s = await dialGuest(g.socketPath, port);
    const reply = await new Promise<string>((resolve, reject) => {
      let out = "";
      s.on("data", (d: Buffer) => {
        out += d.toString();
      });
      s.on("end", () => resolve(out));
      s.on("error", reject);
      s.write("ping");
      s.end();
    });
    assert.equal(reply, "echo:ping");
  });

  test("a closed port → the guest side closes without data", async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const tmp = createServer();
      tmp.listen(0, "127.0.0.1", () => {
        const p = (tmp.address() as { port: number }).port;
        tmp.close(() => resolve(p));
      });
    });
    const s: Socket = await dialGuest(g.socketPath, closedPort);
    const got = await new Promise<string>((resolve) => {
      let out = "";
      s.on("data", (d: Buffer) => {
        out += d.toString();
      });
      s.on("error", () => {});
      s.on("close", () => resolve(out));
    });
    assert.equal(got, "");
  });
});

describe("h2c on the agent port", () => {
  test("HTTP/2 prior knowledge through the vsock socket serves Connect and plain routes", async () => {
    const first = await dialGuest(g.socketPath, AGENT_PORT);
    const session = h2connect("http://guest", { createConnection: () => first });
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = session.request({ ":method": "GET", ":path": "/health" });
        req.on("response", (h) => resolve(Number(h[":status"])));
        req.on("error", reject);
        req.end();
      });
      assert.equal(status, 204);
    } finally {
      session.close();
    }
    const second = await dialGuest(g.socketPath, AGENT_PORT);
    const transport = createConnectTransport({
      baseUrl: "http://guest",
      httpVersion: "2",
      nodeOptions: { createConnection: () => second },
    });
    const r = await collect(
      createClient(Process, transport).start({ process: { cmd: "echo", args: ["via-h2"] }, stdin: false }),
    );
    assert.equal(r.stdout, "via-h2\n");
  });
});
