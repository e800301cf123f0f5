import { create } from "@bufbuild/protobuf";
import {
  ListFilesRequestSchema,
  ReadFileRequestSchema,
  WriteFileRequestSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError } from "../errors.js";
import { listFiles } from "../rpc/list-files.js";
import { openFile } from "../rpc/read-file.js";
import { writeFile } from "../rpc/write-file.js";
import { queryParam } from "./body.js";
import type { RestOptions } from "./common.js";
import { fileEntryJson } from "./views.js";

type FileRoute = { Params: { id: string }; Querystring: Record<string, unknown> };

function pathParam(query: unknown): string {
  const path = queryParam(query, "path");
  if (path === undefined) throw new InvalidArgumentError("query parameter 'path' is required");
  return path;
}

/** PUT/GET /v1/sandboxes/:id/files?path=…, GET /v1/sandboxes/:id/files/list?path=… */
export async function fileRoutes(app: FastifyInstance, opts: RestOptions): Promise<void> {
  const { deps } = opts;

  // In this scope every body is the file's raw bytes, whatever its content type says
  // (`curl -T` sends none, `--data-binary` sends a form type), up to the file limit.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer", bodyLimit: opts.fileLimitBytes }, (_req, body, done) => {
    done(null, body);
  });

  app.put<FileRoute>("/sandboxes/:id/files", { bodyLimit: opts.fileLimitBytes }, async (req) => {
    const content = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const res = await writeFile(
      deps,
      create(WriteFileRequestSchema, { sandboxId: req.params.id, path: pathParam(req.query), content }),
    );
    return { path: res.path };
  });

  app.get<FileRoute>("/sandboxes/:id/files", async (req, reply) => {
    const file = await openFile(
      deps,
      create(ReadFileRequestSchema, { sandboxId: req.params.id, path: pathParam(req.query) }),
    );
    reply.type("application/octet-stream");
    if (file.sizeBytes !== undefined) reply.header("content-length", file.sizeBytes);
    // Fastify pipes the agent's body through and destroys it if the client goes away.
    return reply.send(file.body);
  });

  app.get<FileRoute>("/sandboxes/:id/files/list", async (req) => {
    const res = await listFiles(
      deps,
      create(ListFilesRequestSchema, { sandboxId: req.params.id, path: queryParam(req.query, "path") ?? "" }),
    );
    return { entries: res.entries.map(fileEntryJson) };
  });
}
