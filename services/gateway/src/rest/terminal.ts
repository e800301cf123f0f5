import type { WebSocket } from "@fastify/websocket";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { InvalidArgumentError, toErrorResponse } from "../errors.js";
import { checkSandboxId } from "../rpc/validate.js";
import { AgentProcess } from "../sandbox/agent-process.js";
import { resolveSandboxPath, SANDBOX_HOME } from "../sandbox/paths.js";
import { queryParam } from "./body.js";
import type { RestOptions } from "./common.js";
import { errorAnswers, jsonAnswer, ref, sandboxParams } from "./schemas.js";

type TerminalRoute = { Params: { id: string }; Querystring: Record<string, unknown> };

/** A terminal's size limits (as Daytona's PTYs): enough for any real screen. */
const MAX_SIDE = 1000;
/** A client this far behind (bytes queued to it) is cut off rather than buffered without end. */
const MAX_QUEUED_BYTES = 8 * 1024 * 1024;

export interface TerminalSize {
  cols: number;
  rows: number;
}

function side(raw: string | undefined, name: string, fallback: number): number {
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < 1 || n > MAX_SIDE)
    throw new InvalidArgumentError(`'${name}' must be an integer from 1 to ${MAX_SIDE}`);
  return n;
}

/** The query of a terminal (pure): `cols`, `rows` (default 80×24), `cwd` (default the home). */
export function terminalQuery(query: unknown): TerminalSize & { cwd: string } {
  const cwd = queryParam(query, "cwd");
  return {
    cols: side(queryParam(query, "cols"), "cols", 80),
    rows: side(queryParam(query, "rows"), "rows", 24),
    cwd: cwd === undefined || cwd === "" ? SANDBOX_HOME : resolveSandboxPath(cwd),
  };
}

/**
 * A text frame from the client (pure): `{"resize":{"cols":C,"rows":R}}`; anything else is an
 * InvalidArgumentError (the session goes on; the client gets an error frame).
 */
export function controlFrame(text: string): { resize: TerminalSize } {
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    throw new InvalidArgumentError("a text frame must be JSON");
  }
  const r = (msg as { resize?: unknown } | null)?.resize as Record<string, unknown> | undefined;
  const ok = (v: unknown) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= MAX_SIDE;
  if (r === undefined || typeof r !== "object" || r === null || !ok(r.cols) || !ok(r.rows))
    throw new InvalidArgumentError(
      `a text frame must be {"resize":{"cols":C,"rows":R}} with integers from 1 to ${MAX_SIDE}`,
    );
  return { resize: { cols: r.cols as number, rows: r.rows as number } };
}

/**
 * `GET /v1/sandboxes/:id/terminal?cols=&rows=&cwd=` (WebSocket): a login bash on a
 * pseudo-terminal in the sandbox. Binary frames carry the terminal's bytes both ways; a text
 * frame `{"resize":{"cols","rows"}}` resizes it. When the shell ends the server sends
 * `{"exit":{"code":N}}` (with `reason` when it did not exit by itself) and closes with 1000;
 * a failure after the upgrade is `{"error":{"code","message"}}` and a close with 1011. The
 * shell is killed when the client goes away: a terminal lives as long as its connection
 * (Daytona's PTY sessions, which outlive it, are the other model).
 *
 * The sandbox is checked before the upgrade, so an unknown or paused one is an ordinary 404
 * or 409 answer. Counts as activity for as long as the connection is open.
 */
export async function terminalRoutes(app: FastifyInstance, opts: RestOptions): Promise<void> {
  const { deps } = opts;
  const live = new Set<AgentProcess>();
  app.addHook("onClose", async () => {
    const all = [...live];
    live.clear();
    await Promise.allSettled(all.map((p) => p.kill().finally(() => p.detach())));
  });

  const check = async (req: FastifyRequest<TerminalRoute>) => {
    checkSandboxId(req.params.id);
    terminalQuery(req.query);
    await deps.agents.connect(req.params.id);
  };

  const plain = async (_req: FastifyRequest<TerminalRoute>, reply: FastifyReply) =>
    reply.code(426).header("upgrade", "websocket").send({
      code: "invalid_argument",
      message: "this route is a WebSocket: send an Upgrade request",
    });

  const ws = (socket: WebSocket, req: FastifyRequest<TerminalRoute>) => {
    const id = req.params.id;
    const { cols, rows, cwd } = terminalQuery(req.query);
    let proc: AgentProcess | undefined;
    let gone = false;
    const sendJson = (o: object) => {
      if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(o));
    };
    const end = (code: number, reason: string) => {
      if (socket.readyState === socket.OPEN) socket.close(code, reason.slice(0, 120));
    };
    const fail = (err: unknown) => {
      const e = toErrorResponse(err, { logger: deps.logger, requestId: req.requestId });
      sendJson({ error: { code: e.code, message: e.message } });
      end(1011, e.code);
    };
    const stop = () => {
      const p = proc;
      if (p === undefined || !p.running) return;
      live.delete(p);
      p.kill()
        .catch((err: unknown) => deps.logger.warn({ err, "sandbox.id": id }, "could not kill a terminal"))
        .finally(() => p.detach());
    };
    // Input and resizes go to the agent one at a time, in the order they came, after the start.
    let queue: Promise<void> = AgentProcess.start(
      { deps, logger: deps.logger },
      id,
      {
        cmd: "/bin/bash",
        args: ["-l", "-i"],
        envs: { TERM: "xterm-256color" },
        cwd,
        pty: { cols, rows },
        stdin: false,
      },
      {
        onData: (_kind, data) => {
          if (socket.readyState !== socket.OPEN) return;
          if (socket.bufferedAmount > MAX_QUEUED_BYTES) {
            end(1008, "client too slow");
            return;
          }
          socket.send(data, { binary: true });
        },
        onExit: (code, reason) => {
          if (proc !== undefined) live.delete(proc);
          sendJson({ exit: { code, ...(reason !== undefined ? { reason } : {}) } });
          end(1000, "exited");
        },
      },
    ).then(
      (p) => {
        proc = p;
        if (gone) stop();
        else if (p.running) live.add(p);
      },
      (err: unknown) => fail(err),
    );
    /** Runs fn on the running process after everything queued before; a failure ends the terminal. */
    const then = (fn: (p: AgentProcess) => Promise<void>) => {
      queue = queue
        .then(() => (proc?.running && !gone ? fn(proc) : undefined))
        .catch((err: unknown) => {
          fail(err);
          stop();
        });
    };
    socket.on("message", (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (isBinary) {
        then((p) => p.write(bytes, true));
        return;
      }
      let frame: ReturnType<typeof controlFrame>;
      try {
        frame = controlFrame(bytes.toString("utf8"));
      } catch (err) {
        const e = toErrorResponse(err, { logger: deps.logger, requestId: req.requestId });
        sendJson({ error: { code: e.code, message: e.message } });
        return;
      }
      then((p) => p.resize(frame.resize.cols, frame.resize.rows));
    });
    socket.on("close", () => {
      gone = true;
      stop();
    });
  };

  app.route<TerminalRoute>({
    method: "GET",
    url: "/sandboxes/:id/terminal",
    schema: {
      tags: ["exec"],
      operationId: "terminal",
      summary: "An interactive terminal (WebSocket upgrade): a login bash on a pseudo-terminal",
      params: sandboxParams,
      querystring: {
        type: "object",
        properties: {
          cols: { type: "integer", minimum: 1, maximum: MAX_SIDE, description: "Columns (default 80)." },
          rows: { type: "integer", minimum: 1, maximum: MAX_SIDE, description: "Rows (default 24)." },
          cwd: { type: "string", description: "Working directory (default: the user's home)." },
        },
      },
      response: {
        101: {
          description:
            'Switching to a WebSocket. Binary frames: the terminal\'s bytes, both ways. Text frames: the client sends {"resize":{"cols","rows"}}; the server sends {"exit":{"code"}} when the shell ends (then closes), or {"error":{"code","message"}}.',
        },
        426: jsonAnswer("Not a WebSocket upgrade request.", ref("Error")),
        ...errorAnswers(400, 404, 409),
      },
    },
    preHandler: check,
    handler: plain,
    wsHandler: ws,
  });
}
