import { request } from "node:http";
import { pipeline } from "node:stream/promises";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError } from "../errors.js";
import { checkSandboxId } from "../rpc/validate.js";
import { sendJson } from "../sandbox/http-proxy.js";
import { shareHost } from "../sandbox/share-client.js";
import type { RestOptions } from "./common.js";
import { shareSchema } from "./schemas.js";

type ShareRoute = { Params: { id: string; "*": string }; Querystring: Record<string, unknown> };

/** Request headers passed to the vmm, and response headers passed back. */
const REQUEST_HEADERS = [
  "content-length",
  "content-range",
  "range",
  "x-dnah-sha256",
  "x-dnah-size",
  "x-dnah-digest",
  "x-dnah-durable",
] as const;
/** Query parameters passed to the vmm (chunked uploads, tar, checksums, durability); others are dropped. */
const QUERY_PARAMS = ["sha256", "uploads", "uploadId", "complete", "format", "digest", "durable"] as const;
const RESPONSE_HEADERS = [
  "content-type",
  "content-length",
  "content-range",
  "accept-ranges",
  "last-modified",
] as const;

/**
 * `GET|PUT /v1/sandboxes/:id/share/<path>`: bulk transfer to and from the sandbox's share
 * (`/mnt/dnah-share` inside it), streamed straight between this HTTP connection and the vmm
 * that holds the share folder, which streams to and from the file: no JSON, no base64, nothing
 * buffered whole. Works while the sandbox is paused. GET takes `Range` (206) and `?sha256`
 * (`{sizeBytes, sha256}` instead of the bytes); PUT takes `x-dnah-sha256` (a mismatch is 422
 * and nothing is written) and answers `{path, sizeBytes}`, with `sha256` when one was given or
 * asked for (`?digest=sha256`). Writes go to the host's page cache, like `cp`; `?durable=true`
 * (or `x-dnah-durable: 1`) fsyncs before the answer. The vmm confines paths to the share (no
 * `..`, no links followed) and never shows a partial file.
 *
 * Large files go in chunks, resumable and in parallel: `POST …?uploads` (optional
 * `x-dnah-size`, `x-dnah-sha256`) starts an upload (201 `{uploadId, path, size, expiresAt}`),
 * `PUT …?uploadId=U` with `Content-Range: bytes a-b/total` writes a chunk anywhere,
 * `GET …?uploadId=U` lists `received` ranges, `POST …?uploadId=U&complete` checks and renames
 * it into place, `DELETE …?uploadId=U` aborts. Folders: `GET|PUT …/<dir>?format=tar` streams
 * a tar out of or into the folder. The share's quota refuses uploads with 507.
 */
export async function shareRoutes(app: FastifyInstance, opts: RestOptions): Promise<void> {
  const { deps } = opts;
  // Bodies stay raw streams, whatever their type.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", (_req, _payload, done) => done(null, undefined));

  const proxy =
    (method: "GET" | "PUT" | "POST" | "DELETE") =>
    async (req: import("fastify").FastifyRequest<ShareRoute>, reply: import("fastify").FastifyReply) => {
      const id = req.params.id;
      checkSandboxId(id);
      const host = await shareHost(deps, id);
      const segs = req.params["*"].split("/");
      // The vmm refuses these too; here they would be folded by URL parsing before it sees them.
      if (segs.some((x) => x === "." || x === ".."))
        throw new InvalidArgumentError("path must not contain '.' or '..' segments");
      const path = segs.map(encodeURIComponent).join("/");
      const params = new URLSearchParams();
      for (const q of QUERY_PARAMS) {
        const v = req.query[q];
        if (typeof v === "string") params.set(q, v);
      }
      const query = params.size > 0 ? `?${params}` : "";
      const headers: Record<string, string> = {
        "content-type": "application/octet-stream",
        authorization: host.authorization(),
      };
      for (const h of REQUEST_HEADERS) {
        const v = req.headers[h];
        if (typeof v === "string") headers[h] = v;
      }
      reply.hijack();
      const res = reply.raw;
      const upstream = request(`${host.vmmUrl}/share/${encodeURIComponent(id)}/${path}${query}`, {
        method,
        headers,
      });
      // Bytes go on as they come (no Nagle wait on the last segment of a chunk).
      upstream.setNoDelay(true);
      req.raw.socket.setNoDelay(true);
      upstream.on("response", (up) => {
        const out: Record<string, string> = {};
        for (const h of RESPONSE_HEADERS) {
          const v = up.headers[h];
          if (typeof v === "string") out[h] = v;
        }
        // A refusal (413, 422…) can come before the whole body was sent: stop forwarding it
        // but keep reading it, so the client gets this answer, not a reset connection.
        if (method === "PUT" && (up.statusCode ?? 502) >= 400 && !req.raw.readableEnded) {
          req.raw.unpipe(upstream);
          req.raw.resume();
        }
        res.writeHead(up.statusCode ?? 502, out);
        pipeline(up, res)
          // A refused upload's request was never ended: the vmm would wait for its body.
          .then(() => !upstream.writableFinished && upstream.destroy())
          .catch(() => res.destroy());
      });
      upstream.on("error", (err) => {
        deps.logger.warn({ "sandbox.id": id, err: err.message }, "share transfer to the vmm failed");
        if (!res.headersSent)
          sendJson(res, 502, { code: "unavailable", message: "the sandbox's host did not answer" });
        else res.destroy();
      });
      // The client going away ends the upstream request too (the vmm then discards the upload).
      res.on("close", () => {
        if (!res.writableFinished) upstream.destroy();
      });
      // pipe, not pipeline: an upstream refusal must not destroy the client's socket.
      if (method === "PUT") req.raw.pipe(upstream);
      else {
        req.raw.resume();
        upstream.end();
      }
    };

  app.get<ShareRoute>("/sandboxes/:id/share/*", shareSchema("GET"), proxy("GET"));
  app.put<ShareRoute>("/sandboxes/:id/share/*", shareSchema("PUT"), proxy("PUT"));
  app.post<ShareRoute>("/sandboxes/:id/share/*", shareSchema("POST"), proxy("POST"));
  app.delete<ShareRoute>("/sandboxes/:id/share/*", shareSchema("DELETE"), proxy("DELETE"));
}
