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
import { errorAnswers, jsonAnswer, listOf, objectOf, sandboxParams } from "./schemas.js";
import { fileEntryJson } from "./views.js";

type FileRoute = { Params: { id: string }; Querystring: Record<string, unknown> };

function pathParam(query: unknown): string {
  const path = queryParam(query, "path");
  if (path === undefined) throw new InvalidArgumentError("query parameter 'path' is required");
  return path;
}

const pathQuery = (required: boolean, description: string) => ({
  type: "object",
  properties: { path: { type: "string", description } },
  ...(required ? { required: ["path"] } : {}),
});
const fileSchema = (operationId: string, summary: string, rest: object) => ({
  tags: ["files"],
  operationId,
  summary,
  params: sandboxParams,
  ...rest,
});

/** PUT/GET /v1/sandboxes/:id/files?path=…, GET /v1/sandboxes/:id/files/list?path=… */
export async function fileRoutes(app: FastifyInstance, opts: RestOptions): Promise<void> {
  const { deps } = opts;

  // In this scope every body is the file's raw bytes, whatever its content type says
  // (`curl -T` sends none, `--data-binary` sends a form type), up to the file limit.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer", bodyLimit: opts.fileLimitBytes }, (_req, body, done) => {
    done(null, body);
  });

  const writeSchema = fileSchema("writeFile", "Write a file (parents created; replaced if it exists)", {
    querystring: pathQuery(true, "Absolute, or relative to the user's home."),
    body: {
      description: "The file's raw bytes, any content type.",
      content: {
        "application/octet-stream": {
          schema: { type: "string", contentMediaType: "application/octet-stream" },
        },
      },
    },
    response: {
      200: jsonAnswer("Written.", objectOf("path", { type: "string", description: "The absolute path." })),
      ...errorAnswers(400, 404, 409, 413),
    },
  });
  app.put<FileRoute>(
    "/sandboxes/:id/files",
    { bodyLimit: opts.fileLimitBytes, schema: writeSchema },
    async (req) => {
      const content = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const res = await writeFile(
        deps,
        create(WriteFileRequestSchema, { sandboxId: req.params.id, path: pathParam(req.query), content }),
      );
      return { path: res.path };
    },
  );

  const readSchema = fileSchema("readFile", "Read a file (streamed, binary-safe)", {
    querystring: pathQuery(true, "Absolute, or relative to the user's home."),
    response: {
      200: {
        description: "The file's bytes.",
        content: {
          "application/octet-stream": {
            schema: { type: "string", contentMediaType: "application/octet-stream" },
          },
        },
      },
      ...errorAnswers(400, 404, 409),
    },
  });
  app.get<FileRoute>("/sandboxes/:id/files", { schema: readSchema }, async (req, reply) => {
    const file = await openFile(
      deps,
      create(ReadFileRequestSchema, { sandboxId: req.params.id, path: pathParam(req.query) }),
    );
    reply.type("application/octet-stream");
    if (file.sizeBytes !== undefined) reply.header("content-length", file.sizeBytes);
    // Fastify pipes the agent's body through and destroys it if the client goes away.
    return reply.send(file.body);
  });

  const listSchema = fileSchema("listFiles", "List a folder", {
    querystring: pathQuery(false, "The folder (default: the user's home)."),
    response: {
      200: jsonAnswer("Its entries.", listOf("entries", "FileEntry")),
      ...errorAnswers(400, 404, 409),
    },
  });
  app.get<FileRoute>("/sandboxes/:id/files/list", { schema: listSchema }, async (req) => {
    const res = await listFiles(
      deps,
      create(ListFilesRequestSchema, { sandboxId: req.params.id, path: queryParam(req.query, "path") ?? "" }),
    );
    return { entries: res.entries.map(fileEntryJson) };
  });
}
