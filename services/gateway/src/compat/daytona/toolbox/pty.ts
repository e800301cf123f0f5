import type { WebSocket } from "@fastify/websocket";
import type { FastifyPluginAsync } from "fastify";
import { GatewayError, InvalidArgumentError } from "../../../errors.js";
import { AgentProcess } from "../../../sandbox/agent-process.js";
import { SANDBOX_HOME } from "../../../sandbox/paths.js";
import type { ToolboxContext } from "./context.js";
import { body, envMap, optInt, optStr, query, sandboxPath } from "./validate.js";

const MAX_PTYS_PER_SANDBOX = 32;
/** Output kept while no client is attached, replayed to the next one. */
const BACKLOG_BYTES = 64 * 1024;
/** An exited PTY is still reported (inactive) this long. */
const EXITED_KEEP_MS = 60_000;
const PTY_ID_RE = /^[A-Za-z0-9_.:@+-]{1,128}$/;
const ENVS_PROTOCOL = "X-Daytona-Pty-Envs~";

type I = { Params: { sandboxId: string; sessionId: string } };

interface PtyInfo {
  id: string;
  active: boolean;
  cols: number;
  rows: number;
  cwd: string;
  envs: Record<string, string>;
  createdAt: string;
  lazyStart: boolean;
}

/** One terminal: a login bash on a pseudo-terminal, with the WebSocket clients attached to it. */
class PtySession {
  proc: AgentProcess | undefined;
  active = true;
  exit: { exitCode: number; exitReason?: string } | undefined;
  readonly clients = new Set<WebSocket>();
  private backlog: Buffer[] = [];
  private backlogBytes = 0;
  readonly createdAt = new Date();

  constructor(
    readonly id: string,
    public cols: number,
    public rows: number,
    readonly cwd: string,
    readonly envs: Record<string, string>,
    private readonly onGone: () => void,
  ) {}

  async start(ctx: ToolboxContext, sandboxId: string): Promise<void> {
    this.proc = await AgentProcess.start(
      ctx,
      sandboxId,
      {
        cmd: "/bin/bash",
        args: ["-l", "-i"],
        envs: { TERM: "xterm-256color", ...this.envs },
        cwd: this.cwd,
        pty: { cols: this.cols, rows: this.rows },
        stdin: false,
      },
      {
        onData: (_kind, data) => this.output(data),
        onExit: (exitCode, reason) => this.exited(exitCode, reason),
      },
    );
  }

  info(): PtyInfo {
    return {
      id: this.id,
      active: this.active,
      cols: this.cols,
      rows: this.rows,
      cwd: this.cwd,
      envs: this.envs,
      createdAt: this.createdAt.toISOString(),
      lazyStart: false,
    };
  }

  attach(ws: WebSocket): void {
    ws.send(JSON.stringify({ type: "control", status: "connected" }));
    if (this.exit !== undefined) {
      closeExited(ws, this.exit);
      return;
    }
    for (const b of this.backlog) ws.send(b, { binary: true });
    this.backlog = [];
    this.backlogBytes = 0;
    this.clients.add(ws);
    ws.on("message", (data: Buffer | ArrayBuffer | Buffer[]) => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      this.proc?.write(bytes, true).catch(() => {
        ws.send(JSON.stringify({ type: "control", status: "error", error: "cannot write to the PTY" }));
      });
    });
    ws.on("close", () => this.clients.delete(ws));
  }

  private output(data: Buffer): void {
    if (this.clients.size === 0) {
      this.backlog.push(data);
      this.backlogBytes += data.length;
      while (this.backlogBytes > BACKLOG_BYTES && this.backlog.length > 1)
        this.backlogBytes -= this.backlog.shift()?.length ?? 0;
      return;
    }
    for (const ws of this.clients) ws.send(data, { binary: true });
  }

  private exited(exitCode: number, reason: string | undefined): void {
    this.active = false;
    this.exit = reason === undefined ? { exitCode } : { exitCode, exitReason: reason };
    for (const ws of this.clients) closeExited(ws, this.exit);
    this.clients.clear();
    setTimeout(this.onGone, EXITED_KEEP_MS).unref();
  }
}

function closeExited(ws: WebSocket, exit: { exitCode: number; exitReason?: string }): void {
  ws.send(JSON.stringify({ type: "control", status: "exited", ...exit }));
  ws.close(1000, closeReason(exit));
}

function refuse(ws: WebSocket, error: string): void {
  ws.send(JSON.stringify({ type: "control", status: "error", error }));
  ws.close(1011, closeReason({ error }));
}

/** A close frame's reason as JSON, its text fields shortened to the 123 bytes a reason may have. */
export function closeReason(o: { exitCode?: number; exitReason?: string; error?: string }): string {
  for (let room = 100; room >= 0; room -= 10) {
    const s = JSON.stringify({
      ...o,
      ...(o.exitReason !== undefined ? { exitReason: o.exitReason.slice(0, room) } : {}),
      ...(o.error !== undefined ? { error: o.error.slice(0, room) } : {}),
    });
    if (Buffer.byteLength(s) <= 123) return s;
  }
  return JSON.stringify(o.exitCode !== undefined ? { exitCode: o.exitCode } : {});
}

/** `envs` from the `X-Daytona-Pty-Envs~<base64url JSON>` subprotocol the SDK offers. */
export function envsFromProtocols(header: string | undefined): Record<string, string> {
  for (const p of (header ?? "").split(",").map((s) => s.trim())) {
    if (!p.startsWith(ENVS_PROTOCOL)) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(p.slice(ENVS_PROTOCOL.length), "base64url").toString("utf8"));
    } catch {
      throw new InvalidArgumentError("the PTY envs subprotocol is not base64url JSON");
    }
    return envMap({ envs: parsed }, "envs");
  }
  return {};
}

/** `/process/pty…`: terminals over WebSocket (Daytona's PtyHandle protocol) and their control calls. */
export function ptyRoutes(): FastifyPluginAsync<ToolboxContext> {
  const bySandbox = new Map<string, Map<string, PtySession>>();
  const of = (id: string) => {
    let m = bySandbox.get(id);
    if (m === undefined) {
      m = new Map();
      bySandbox.set(id, m);
    }
    return m;
  };
  const get = (sandboxId: string, id: string) => {
    const p = bySandbox.get(sandboxId)?.get(id);
    if (p === undefined) throw new GatewayError("not_found", `PTY session '${id}' not found`);
    return p;
  };

  return async (app, ctx) => {
    app.addHook("onClose", async () => {
      const all = [...bySandbox.values()].flatMap((m) => [...m.values()]);
      bySandbox.clear();
      await Promise.allSettled(all.map((p) => p.proc?.kill().finally(() => p.proc?.detach())));
    });

    const create = async (sandboxId: string, o: Record<string, unknown>, envs: Record<string, string>) => {
      const id = optStr(o, "id") ?? crypto.randomUUID();
      if (!PTY_ID_RE.test(id)) throw new InvalidArgumentError("id: 1-128 letters, digits or _ . : @ + -");
      const cols = optInt(o, "cols", 1, 1000) ?? 80;
      const rows = optInt(o, "rows", 1, 1000) ?? 24;
      const cwdRaw = optStr(o, "cwd");
      const cwd = cwdRaw === undefined ? SANDBOX_HOME : sandboxPath(cwdRaw, "cwd");
      const m = of(sandboxId);
      if (m.has(id)) throw new GatewayError("already_exists", `PTY session '${id}' already exists`);
      if (m.size >= MAX_PTYS_PER_SANDBOX)
        throw new GatewayError(
          "resource_exhausted",
          `at most ${MAX_PTYS_PER_SANDBOX} PTY sessions per sandbox`,
        );
      const p = new PtySession(id, cols, rows, cwd, envs, () => {
        if (m.get(id) === p) m.delete(id);
        if (m.size === 0 && bySandbox.get(sandboxId) === m) bySandbox.delete(sandboxId);
      });
      m.set(id, p);
      try {
        await p.start(ctx, sandboxId);
      } catch (err) {
        m.delete(id);
        throw err;
      }
      return p;
    };

    app.post<{ Params: { sandboxId: string } }>("/:sandboxId/process/pty", async (req, reply) => {
      const b = body(req.body);
      const p = await create(req.params.sandboxId, b, envMap(b, "envs"));
      return reply.code(201).send({ sessionId: p.id });
    });

    app.get<{ Params: { sandboxId: string } }>("/:sandboxId/process/pty", async (req) => ({
      sessions: [...of(req.params.sandboxId).values()].map((p) => p.info()),
    }));

    app.get<{ Params: { sandboxId: string } }>(
      "/:sandboxId/process/pty/create-connect",
      { websocket: true },
      async (socket: WebSocket, req) => {
        const { sandboxId } = req.params as { sandboxId: string };
        try {
          const envs = envsFromProtocols(req.headers["sec-websocket-protocol"]);
          const p = await create(sandboxId, query(req.query), envs);
          p.attach(socket);
        } catch (err) {
          refuse(socket, err instanceof Error ? err.message : "cannot create the PTY");
        }
      },
    );

    app.get<I>("/:sandboxId/process/pty/:sessionId", async (req) =>
      get(req.params.sandboxId, req.params.sessionId).info(),
    );

    app.get<I>(
      "/:sandboxId/process/pty/:sessionId/connect",
      { websocket: true },
      (socket: WebSocket, req) => {
        const { sandboxId, sessionId } = req.params as I["Params"];
        const p = bySandbox.get(sandboxId)?.get(sessionId);
        if (p === undefined) refuse(socket, `PTY session '${sessionId}' not found`);
        else p.attach(socket);
      },
    );

    app.post<I>("/:sandboxId/process/pty/:sessionId/resize", async (req) => {
      const b = body(req.body);
      const cols = optInt(b, "cols", 1, 1000);
      const rows = optInt(b, "rows", 1, 1000);
      if (cols === undefined || rows === undefined)
        throw new InvalidArgumentError("cols and rows are required");
      const p = get(req.params.sandboxId, req.params.sessionId);
      if (!p.active) throw new GatewayError("failed_precondition", `PTY session '${p.id}' has exited`);
      await p.proc?.resize(cols, rows);
      p.cols = cols;
      p.rows = rows;
      return p.info();
    });

    app.delete<I>("/:sandboxId/process/pty/:sessionId", async (req) => {
      const p = get(req.params.sandboxId, req.params.sessionId);
      await p.proc?.kill();
      return {};
    });
  };
}
