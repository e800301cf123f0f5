import assert from "node:assert/strict";
import { createServer, get, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { createTunnelAgent, TUNNEL_PROTOCOL, TunnelError } from "../src/tunnel.js";

/**
 * The tunnel agent against a real HTTP server standing in for a vmm: upgrades it refuses with
 * a status from a script, then upgrades it accepts, behind which it answers one HTTP request
 * as the guest would.
 */
describe("createTunnelAgent: dials that the guest did not answer are tried again", () => {
  let server: Server;
  let url = "";
  /** The statuses the next upgrades get; 101 once it runs out. */
  let script: number[] = [];
  let dials = 0;

  before(async () => {
    server = createServer((_req, res) => res.writeHead(400).end());
    server.on("upgrade", (req, socket) => {
      dials++;
      const status = script.shift() ?? 101;
      if (status !== 101 || req.headers.upgrade !== TUNNEL_PROTOCOL) {
        const body = JSON.stringify({
          code: status === 404 ? "not_found" : "unavailable",
          message: `no (${status})`,
        });
        socket.end(
          `HTTP/1.1 ${status} No\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
        );
        return;
      }
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${TUNNEL_PROTOCOL}\r\n\r\n`,
      );
      // The "guest": one HTTP answer to whatever request comes through.
      socket.once("data", () =>
        socket.end("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nguest"),
      );
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  const fetchThrough = (port: number) =>
    new Promise<string>((resolve, reject) => {
      const agent = createTunnelAgent(url, "sb1", port);
      get({ host: "guest", path: "/", agent }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => {
          text += c.toString();
        });
        res.on("end", () => {
          agent.destroy();
          resolve(`${res.statusCode} ${text}`);
        });
      }).on("error", (err) => {
        agent.destroy();
        reject(err);
      });
    });

  test("two 502s, then the dial goes through and the request is answered", async () => {
    script = [502, 502];
    dials = 0;
    assert.equal(await fetchThrough(8080), "200 guest");
    assert.equal(dials, 3);
  });

  test("three 502s: the third is the caller's error", async () => {
    script = [502, 502, 502];
    dials = 0;
    await assert.rejects(fetchThrough(8080), (e: unknown) => e instanceof TunnelError && e.status === 502);
    assert.equal(dials, 3);
  });

  test("404 (unknown sandbox) and 409 (paused) are final at once", async () => {
    for (const status of [404, 409]) {
      script = [status];
      dials = 0;
      await assert.rejects(
        fetchThrough(8080),
        (e: unknown) => e instanceof TunnelError && e.status === status,
      );
      assert.equal(dials, 1);
    }
  });
});
