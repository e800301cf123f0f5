import { once } from "node:events";
import type { ServerResponse } from "node:http";
import { TextDecoder } from "node:util";
import { create } from "@bufbuild/protobuf";
import {
  ExecRequestSchema,
  ExecStreamRequestSchema,
  type ExecStreamResponse,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { toErrorResponse } from "../errors.js";
import { exec } from "../rpc/exec.js";
import { execStream } from "../rpc/exec-stream.js";
import { objectBody, optString, optStringMap, optUint32, reqString } from "./body.js";
import { abortOnDisconnect, type RestOptions } from "./common.js";
import { envVars, errorAnswers, jsonAnswer, jsonBody, ref, sandboxParams } from "./schemas.js";

const EXEC_FIELDS = ["command", "envs", "cwd", "stdin", "timeoutMs", "user"] as const;

const EXEC_BODY = jsonBody(
  {
    command: { type: "string", description: "Run by `/bin/bash -l -c`." },
    envs: envVars,
    cwd: { type: "string", description: "Working directory (default: the user's home)." },
    stdin: { type: "string", description: "UTF-8 text written to the process's stdin, then closed." },
    timeoutMs: { type: "integer", minimum: 0, maximum: 4294967295, description: "0: the gateway's default." },
    user: { type: "string", description: "Run as this user (default: the sandbox's user)." },
  },
  ["command"],
);
const execSchema = (operationId: string, summary: string, answer: object) => ({
  tags: ["exec"],
  operationId,
  summary,
  params: sandboxParams,
  body: EXEC_BODY,
  response: { 200: answer, ...errorAnswers(400, 404, 409, 413, 415) },
});

/** The JSON body shared by /exec and /exec/stream, as a request init. */
interface ExecInit {
  sandboxId: string;
  command: string;
  envs: Record<string, string>;
  cwd: string;
  stdin: Uint8Array;
  timeoutMs: number;
  user: string;
}

function execInit(sandboxId: string, raw: unknown): ExecInit {
  const body = objectBody(raw, EXEC_FIELDS);
  const stdin = optString(body, "stdin");
  return {
    sandboxId,
    command: reqString(body, "command"),
    envs: optStringMap(body, "envs") ?? {},
    cwd: optString(body, "cwd") ?? "",
    stdin: stdin !== undefined ? Buffer.from(stdin, "utf8") : new Uint8Array(0),
    timeoutMs: optUint32(body, "timeoutMs") ?? 0,
    user: optString(body, "user") ?? "",
  };
}

/** POST /v1/sandboxes/:id/exec and /exec/stream */
export async function execRoutes(app: FastifyInstance, opts: RestOptions): Promise<void> {
  const { deps } = opts;

  app.post<{ Params: { id: string } }>(
    "/sandboxes/:id/exec",
    {
      bodyLimit: opts.jsonBodyLimitBytes,
      schema: execSchema(
        "exec",
        "Run a command and wait for it",
        jsonAnswer("Its exit code and output (a non-zero exit is still a 200).", ref("ExecResult")),
      ),
    },
    async (req, reply) => {
      const request = create(ExecRequestSchema, execInit(req.params.id, req.body));
      const { response, truncated } = await exec(deps, request, { signal: abortOnDisconnect(reply) });
      return {
        exitCode: response.exitCode,
        stdout: Buffer.from(response.stdout).toString("utf8"),
        stderr: Buffer.from(response.stderr).toString("utf8"),
        ...(response.error !== "" ? { error: response.error } : {}),
        truncated,
      };
    },
  );

  /**
   * NDJSON: {"type":"start","pid"}, {"type":"stdout"|"stderr","data"}, {"type":"exit",
   * "exitCode","error"?}; a failure after the stream began is a last {"type":"error",
   * "code","message"} line. Failures before the first event are ordinary JSON errors.
   */
  app.post<{ Params: { id: string } }>(
    "/sandboxes/:id/exec/stream",
    {
      bodyLimit: opts.jsonBodyLimitBytes,
      schema: execSchema("execStream", "Run a command, streaming its output as NDJSON", {
        description:
          'One JSON object a line: {"type":"start","pid"}, {"type":"stdout"|"stderr","data"}, {"type":"exit","exitCode","error"?}; a failure after the start is a last {"type":"error","code","message"}.',
        content: {
          "application/x-ndjson": {
            schema: {
              type: "object",
              required: ["type"],
              properties: {
                type: { type: "string", enum: ["start", "stdout", "stderr", "exit", "error"] },
                pid: { type: "integer" },
                data: { type: "string" },
                exitCode: { type: "integer" },
                error: { type: "string" },
                code: { type: "string" },
                message: { type: "string" },
              },
            },
          },
        },
      }),
    },
    async (req, reply) => {
      const request = create(ExecStreamRequestSchema, execInit(req.params.id, req.body));
      const events = execStream(deps, request, { signal: abortOnDisconnect(reply) });
      // Pull the first event before answering, so "not found" etc. get their real status.
      const first = await events.next();
      reply.hijack();
      const res = reply.raw;
      for (const [k, v] of Object.entries(reply.getHeaders())) if (v !== undefined) res.setHeader(k, v);
      res.writeHead(200, {
        "content-type": "application/x-ndjson",
        "cache-control": "no-store",
        "x-accel-buffering": "no",
      });
      res.socket?.setNoDelay(true);
      const text = { stdout: new TextDecoder(), stderr: new TextDecoder() };
      try {
        for (let r = first; r.done !== true; r = await events.next()) {
          for (const line of linesFor(r.value, text)) {
            if (!(await writeLine(res, line))) {
              await events.return(undefined); // client gone: the generator kills the process
              return;
            }
          }
        }
      } catch (err) {
        const e = toErrorResponse(err, { logger: deps.logger, requestId: req.requestId });
        await writeLine(res, { type: "error", code: e.code, message: e.message });
      } finally {
        res.end();
      }
    },
  );
}

/** Output is decoded as UTF-8 per stream, carrying split characters over to the next chunk. */
function linesFor(ev: ExecStreamResponse, text: { stdout: TextDecoder; stderr: TextDecoder }): object[] {
  switch (ev.event.case) {
    case "pid":
      return [{ type: "start", pid: ev.event.value }];
    case "stdout":
    case "stderr": {
      const data = text[ev.event.case].decode(ev.event.value, { stream: true });
      return data === "" ? [] : [{ type: ev.event.case, data }];
    }
    case "exit": {
      const { exitCode, error } = ev.event.value;
      // Bytes held back by a decoder (an incomplete last character) are flushed as U+FFFD.
      const lines: object[] = [];
      for (const type of ["stdout", "stderr"] as const) {
        const data = text[type].decode();
        if (data !== "") lines.push({ type, data });
      }
      lines.push({ type: "exit", exitCode, ...(error !== "" ? { error } : {}) });
      return lines;
    }
    default:
      return [];
  }
}

/** Writes one line; waits while the client is slow; false once the client has gone. */
async function writeLine(res: ServerResponse, obj: object): Promise<boolean> {
  if (res.destroyed || res.writableEnded) return false;
  if (!res.write(`${JSON.stringify(obj)}\n`)) {
    await Promise.race([once(res, "drain"), once(res, "close")]);
  }
  return !res.destroyed;
}
