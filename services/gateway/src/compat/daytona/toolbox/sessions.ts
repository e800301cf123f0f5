import type { WebSocket } from "@fastify/websocket";
import type { FastifyPluginAsync } from "fastify";
import { GatewayError, InvalidArgumentError } from "../../../errors.js";
import { MAX_COMMAND_BYTES } from "../../../rpc/validate.js";
import { DaytonaHttpError, daemonError } from "../errors.js";
import type { ToolboxContext } from "./context.js";
import { type SessionCommand, ShellSession, STDERR_MARK, STDOUT_MARK } from "./session.js";
import { body, optBool, query, str } from "./validate.js";

const MAX_SESSIONS_PER_SANDBOX = 64;
const SESSION_ID_RE = /^[A-Za-z0-9_.:@+-]{1,128}$/;

type S = { Params: { sandboxId: string; sessionId: string } };
type C = { Params: { sandboxId: string; sessionId: string; commandId: string } };

/** The sessions of every sandbox, by sandbox then session id. In memory: a gateway restart ends them. */
export class SessionRegistry {
  private readonly bySandbox = new Map<string, Map<string, ShellSession>>();
  private readonly creating = new Set<string>();

  of(sandboxId: string): Map<string, ShellSession> {
    let m = this.bySandbox.get(sandboxId);
    if (m === undefined) {
      m = new Map();
      this.bySandbox.set(sandboxId, m);
    }
    return m;
  }

  get(sandboxId: string, sessionId: string): ShellSession {
    const s = this.bySandbox.get(sandboxId)?.get(sessionId);
    if (s === undefined) throw new GatewayError("not_found", `session '${sessionId}' not found`);
    return s;
  }

  async create(ctx: ToolboxContext, sandboxId: string, sessionId: string): Promise<void> {
    const m = this.of(sandboxId);
    const key = `${sandboxId}/${sessionId}`;
    if (m.has(sessionId) || this.creating.has(key))
      throw new GatewayError("already_exists", `session '${sessionId}' already exists`);
    if (m.size >= MAX_SESSIONS_PER_SANDBOX)
      throw new GatewayError(
        "resource_exhausted",
        `at most ${MAX_SESSIONS_PER_SANDBOX} sessions per sandbox`,
      );
    this.creating.add(key);
    try {
      const session = await ShellSession.create(ctx, sandboxId, sessionId, () => {
        // The sandbox is gone (deleted or stopped): nobody can use the session any more.
        if (m.get(sessionId) === session) m.delete(sessionId);
        if (m.size === 0 && this.bySandbox.get(sandboxId) === m) this.bySandbox.delete(sandboxId);
      });
      m.set(sessionId, session);
    } finally {
      this.creating.delete(key);
    }
  }

  async delete(sandboxId: string, sessionId: string): Promise<void> {
    const s = this.get(sandboxId, sessionId);
    this.bySandbox.get(sandboxId)?.delete(sessionId);
    await s.close();
  }

  /** Ends every session (gateway shutdown). */
  async closeAll(): Promise<void> {
    const all = [...this.bySandbox.values()].flatMap((m) => [...m.values()]);
    this.bySandbox.clear();
    await Promise.allSettled(all.map((s) => s.close()));
  }
}

function command(s: ShellSession, commandId: string): SessionCommand {
  const c = s.commands.get(commandId);
  if (c === undefined) throw daemonError("PROCESS_NOT_FOUND", `command '${commandId}' not found`);
  return c;
}

/** `/process/session…`: persistent shells, their commands, logs (JSON or a follow WebSocket), input. */
export function sessionRoutes(registry: SessionRegistry): FastifyPluginAsync<ToolboxContext> {
  return async (app, ctx) => {
    app.post<{ Params: { sandboxId: string } }>("/:sandboxId/process/session", async (req, reply) => {
      const sessionId = str(body(req.body), "sessionId");
      if (!SESSION_ID_RE.test(sessionId))
        throw new InvalidArgumentError("sessionId: 1-128 letters, digits or _ . : @ + -");
      await registry.create(ctx, req.params.sandboxId, sessionId);
      return reply.code(201).send();
    });

    app.get<{ Params: { sandboxId: string } }>("/:sandboxId/process/session", async (req) =>
      [...registry.of(req.params.sandboxId).values()].map((s) => s.list()),
    );

    // No image entrypoint runs in a dnah sandbox: an empty session.
    app.get("/:sandboxId/process/session/entrypoint", async () => ({
      sessionId: "entrypoint",
      commands: [],
    }));
    app.get("/:sandboxId/process/session/entrypoint/logs", async () => ({
      output: "",
      stdout: "",
      stderr: "",
    }));

    app.get<S>("/:sandboxId/process/session/:sessionId", async (req) =>
      registry.get(req.params.sandboxId, req.params.sessionId).list(),
    );

    app.delete<S>("/:sandboxId/process/session/:sessionId", async (req, reply) => {
      await registry.delete(req.params.sandboxId, req.params.sessionId);
      return reply.code(204).send();
    });

    app.post<S>("/:sandboxId/process/session/:sessionId/exec", async (req, reply) => {
      const b = body(req.body);
      const text = str(b, "command");
      if (Buffer.byteLength(text) > MAX_COMMAND_BYTES)
        throw new InvalidArgumentError(`command is longer than ${MAX_COMMAND_BYTES} bytes`);
      const runAsync = optBool(b, "runAsync") === true || optBool(b, "async") === true;
      const s = registry.get(req.params.sandboxId, req.params.sessionId);
      if (s.ended) throw daemonError("SESSION_ENDED", `session '${s.id}' has ended`);
      const cmd = s.exec(text, runAsync);
      if (runAsync) return reply.code(202).send({ cmdId: cmd.id });
      await cmd.done;
      ctx.touch(req.params.sandboxId);
      return {
        cmdId: cmd.id,
        output: cmd.text(),
        stdout: cmd.text(1),
        stderr: cmd.text(2),
        exitCode: cmd.exitCode,
      };
    });

    app.get<C>("/:sandboxId/process/session/:sessionId/command/:commandId", async (req) =>
      command(registry.get(req.params.sandboxId, req.params.sessionId), req.params.commandId).view(),
    );

    app.post<C>("/:sandboxId/process/session/:sessionId/command/:commandId/input", async (req, reply) => {
      const data = body(req.body).data;
      if (typeof data !== "string") throw new InvalidArgumentError("data is required (a string)");
      const s = registry.get(req.params.sandboxId, req.params.sessionId);
      const c = command(s, req.params.commandId);
      if (!c.running)
        throw daemonError("COMMAND_ALREADY_COMPLETED", `command '${c.id}' has already completed`);
      if (!c.runAsync) throw new InvalidArgumentError("only commands run with runAsync read input");
      await s.input(data);
      return reply.code(204).send();
    });

    app.route<C>({
      method: "GET",
      url: "/:sandboxId/process/session/:sessionId/command/:commandId/logs",
      // Checked before a WebSocket upgrade, so an unknown command is a plain 404.
      preHandler: async (req) => {
        command(registry.get(req.params.sandboxId, req.params.sessionId), req.params.commandId);
      },
      handler: async (req) => {
        const c = command(registry.get(req.params.sandboxId, req.params.sessionId), req.params.commandId);
        if (optBool(query(req.query), "follow") === true)
          throw new InvalidArgumentError("follow=true needs a WebSocket upgrade");
        return { output: c.text(), stdout: c.text(1), stderr: c.text(2) };
      },
      wsHandler: (socket: WebSocket, req) => {
        const { sandboxId, sessionId, commandId } = req.params as C["Params"];
        let c: SessionCommand;
        try {
          c = command(registry.get(sandboxId, sessionId), commandId);
        } catch (err) {
          socket.close(1011, err instanceof DaytonaHttpError ? "command not found" : "session not found");
          return;
        }
        let lastTouch = 0;
        const stop = c.follow(
          (fd, data) => {
            socket.send(Buffer.concat([fd === 1 ? STDOUT_MARK : STDERR_MARK, data]), { binary: true });
            const now = Date.now();
            if (now - lastTouch > 10_000) {
              lastTouch = now;
              ctx.touch(sandboxId);
            }
          },
          () => socket.close(1000),
        );
        socket.on("close", stop);
        socket.on("message", () => {}); // the client sends nothing we need
      },
    });
  };
}
