import type { FileHandle } from "node:fs/promises";
import type { Logger } from "@dnah/platform";
import type { FastifyInstance, FastifyReply } from "fastify";
import { InvalidArgumentError } from "../domain/errors.js";
import { openParent, SharePathError, shareSegments } from "./beneath.js";
import { type ShareEvent, type ShareEventBus, shareEvents } from "./events.js";

export interface ShareWatchRoutesOptions {
  /** The host folder of a sandbox's share, or undefined when this vmm has no such sandbox. */
  shareDirOf(sandboxId: string): string | undefined;
  logger: Logger;
  /** The bus to read (tests pass their own); the vmm's one by default. */
  bus?: ShareEventBus;
  /** A comment line is sent this often on a quiet stream, and the sandbox checked for deletion. */
  heartbeatMs?: number;
}

const HEARTBEAT_MS = 15_000;

function fail(reply: FastifyReply, status: number, code: string, message: string) {
  return reply.code(status).type("application/json").send({ code, message });
}

/**
 * `GET /share-watch/<sandbox id>?path=<share-relative folder>&recursive=true|false`: the
 * share's changes as server-sent events, `event: start` once watching, then one
 * `data: {type, path, at}` per change (`path` share-relative with a leading '/'), comment
 * heartbeats, and `event: end` when the sandbox leaves this host. The folder is checked like
 * every share path (`beneath.ts`: no '..', no links). Internal, like the rest of the vmm's API.
 */
export async function shareWatchRoutes(app: FastifyInstance, opts: ShareWatchRoutesOptions): Promise<void> {
  const bus = opts.bus ?? shareEvents;
  const heartbeatMs = opts.heartbeatMs ?? HEARTBEAT_MS;

  app.get<{ Params: { id: string }; Querystring: { path?: string; recursive?: string } }>(
    "/share-watch/:id",
    async (req, reply) => {
      const id = req.params.id;
      const root = opts.shareDirOf(id);
      if (root === undefined) return fail(reply, 404, "not_found", `no sandbox '${id}' on this host`);
      const rawPath = req.query.path ?? "";
      const recursive = req.query.recursive === "true" || req.query.recursive === "1";
      let prefix = "";
      let dir: FileHandle | undefined;
      try {
        if (rawPath.split("/").some((s) => s !== "")) {
          const segs = shareSegments(rawPath);
          // Opens every component as a folder, links refused (the last name is a placeholder).
          dir = await openParent(root, [...segs, "-"], false);
          prefix = `/${segs.join("/")}`;
        } else if (rawPath.includes("\0")) throw new InvalidArgumentError("path must not contain NUL");
      } catch (err) {
        if (err instanceof SharePathError) return fail(reply, 403, "permission_denied", err.message);
        if (err instanceof InvalidArgumentError) return fail(reply, 400, "invalid_argument", err.message);
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT") return fail(reply, 404, "not_found", "no such folder in the share");
        opts.logger.warn({ "sandbox.id": id, err }, "share watch refused");
        return fail(reply, 500, "internal", "cannot watch the share");
      } finally {
        await dir?.close();
      }

      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        "content-type": "text/event-stream",
        "cache-control": "no-store",
        "x-accel-buffering": "no",
      });
      const inScope = (p: string) => {
        if (!p.startsWith(`${prefix}/`)) return false;
        return recursive || !p.slice(prefix.length + 1).includes("/");
      };
      let ended = false;
      const end = (reason: string) => {
        if (ended) return;
        ended = true;
        cleanup();
        res.end(`event: end\ndata: ${JSON.stringify({ reason })}\n\n`);
      };
      const sub = bus.subscribe(
        id,
        root,
        (ev: ShareEvent) => {
          if (!ended && inScope(ev.path)) res.write(`data: ${JSON.stringify(ev)}\n\n`);
        },
        (err) => {
          opts.logger.warn({ "sandbox.id": id, err: err.message }, "share watch failed");
          end("the share cannot be watched any more");
        },
      );
      const timer = setInterval(() => {
        if (opts.shareDirOf(id) === undefined) end("sandbox deleted");
        else res.write(": heartbeat\n\n");
      }, heartbeatMs);
      timer.unref();
      const cleanup = () => {
        clearInterval(timer);
        sub.close();
      };
      res.once("close", () => {
        ended = true;
        cleanup();
      });
      await sub.ready;
      if (!ended) res.write("event: start\ndata: {}\n\n");
    },
  );
}
