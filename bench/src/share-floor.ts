/**
 * The one-hop ceiling of the share bench: a bare `node:http` server (in the bench's process,
 * as the gateway and the vmm are) that streams a PUT body into a file and a file into a GET
 * answer with `pipeline` and 1 MiB file buffers: no routing, no auth, no checks, one hop. What
 * the gateway → vmm path can at best approach with Node's HTTP stack on this machine. And the
 * two-hop ceiling: a bare proxy in front of it (`startFloorProxy`), as the gateway is in front
 * of the vmm, with no auth, no scheduler look-up and no checks.
 */
import { createReadStream, createWriteStream } from "node:fs";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";

const HWM = 1024 * 1024;

export interface FloorServer {
  url: string;
  close(): Promise<void>;
}

/** Serves `PUT|GET /<name>` as the file `<dir>/<name>` (names without '/' only). */
export async function startFloorServer(dir: string): Promise<FloorServer> {
  const server: Server = createServer((req, res) => {
    const name = (req.url ?? "/").slice(1);
    if (name === "" || name.includes("/") || name.includes("..")) {
      res.writeHead(400).end();
      return;
    }
    const path = join(dir, name);
    const done = (err?: unknown) => {
      if (err !== undefined) res.destroy();
    };
    if (req.method === "PUT")
      pipeline(req, createWriteStream(path, { highWaterMark: HWM }))
        .then(() => res.writeHead(200, { "content-type": "application/json" }).end("{}"))
        .catch(done);
    else if (req.method === "GET") pipeline(createReadStream(path, { highWaterMark: HWM }), res).catch(done);
    else res.writeHead(405).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A bare `node:http` proxy to `target`: request and answer bodies piped, nothing else. */
export async function startFloorProxy(target: string): Promise<FloorServer> {
  const server: Server = createServer((req, res) => {
    const headers: Record<string, string> = {};
    const len = req.headers["content-length"];
    if (len !== undefined) headers["content-length"] = len;
    const up = request(`${target}${req.url ?? "/"}`, { method: req.method ?? "GET", headers });
    up.on("response", (r) => {
      const out: Record<string, string> = {};
      if (r.headers["content-length"] !== undefined) out["content-length"] = r.headers["content-length"];
      res.writeHead(r.statusCode ?? 502, out);
      pipeline(r, res).catch(() => res.destroy());
    });
    up.on("error", () => res.destroy());
    if (req.method === "PUT") req.pipe(up);
    else up.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
