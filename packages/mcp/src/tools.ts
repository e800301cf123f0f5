import type { RequestHandlerExtra } from "@modelcontextprotocol/sdk/shared/protocol.js";
import type { ServerNotification, ServerRequest } from "@modelcontextprotocol/sdk/types.js";
import * as z from "zod";
import { DnahApiError, type DnahClient, readBounded } from "./client.js";

/** What one tool call gets besides its arguments. */
export interface ToolContext {
  client: DnahClient;
  /** The gateway origin as the caller reaches it: port URLs are built on it. */
  publicUrl: string;
  extra: RequestHandlerExtra<ServerRequest, ServerNotification>;
}

export interface ToolDef {
  name: string;
  description: string;
  input: z.ZodRawShape;
  /** Its JSON answer (shown to the model as text); throw DnahApiError for a tool error. */
  run(ctx: ToolContext, args: Record<string, unknown>): Promise<unknown>;
}

/** A file read answers at most this much: more is refused with a message, not cut. */
export const READ_LIMIT_BYTES = 1024 * 1024;
/** An exec result keeps this much of each of stdout and stderr (notifications carry it all). */
export const EXEC_KEEP_BYTES = 256 * 1024;

const sandboxId = z.string().min(1).max(128).describe("the sandbox id");
const metadata = z.record(z.string(), z.string()).describe("string key/value pairs");
const enc = (p: string) => encodeURIComponent(p);
const sb = (id: unknown) => `/v1/sandboxes/${enc(String(id))}`;

// The guest's own Node runtime and code runner (bound read-only into every sandbox); the same
// command the Daytona toolbox's code-run uses (services/gateway/.../toolbox/code-run.ts).
const GUEST_NODE =
  "/opt/dnah/node/lib/ld-linux-x86-64.so.2 --library-path /opt/dnah/node/lib /opt/dnah/node/bin/node --no-warnings";
const CODE_COMMANDS = {
  python: "exec python3 -u -",
  javascript: `exec ${GUEST_NODE} /opt/dnah/agent/code-runner.mjs javascript --`,
  typescript: `exec ${GUEST_NODE} /opt/dnah/agent/code-runner.mjs typescript --`,
  bash: "exec bash -s",
} as const;

/** Appends to a bounded text buffer; reports whether anything was dropped. */
class Kept {
  text = "";
  dropped = false;
  add(s: string): void {
    const room = EXEC_KEEP_BYTES - this.text.length;
    if (s.length > room) this.dropped = true;
    if (room > 0) this.text += s.slice(0, room);
  }
}

export const TOOLS: readonly ToolDef[] = [
  {
    name: "create_sandbox",
    description:
      "Create a sandbox (a microVM) and wait until it runs. Returns it; its sandboxId is what every other tool takes. It never stops by itself: kill it when done.",
    input: {
      template: z.string().min(1).max(128).optional().describe("template id (default: base)"),
      envVars: z.record(z.string(), z.string()).optional().describe("environment of every command"),
    },
    async run({ client, extra }, a) {
      // Through Daytona's create: the native API has no port proxy, and Daytona preview links
      // (expose_port) serve the sandboxes it records; every other tool uses the native API on
      // the same sandbox. Its native metadata is Daytona's (the owner's organization), so
      // this tool takes none. Never stopped, archived or deleted automatically.
      const created = await client.json<{ id: string }>(
        "POST",
        "/api/sandbox",
        {
          ...(a.template !== undefined ? { snapshot: a.template } : {}),
          ...(a.envVars !== undefined ? { env: a.envVars } : {}),
          autoStopInterval: 0,
          autoDeleteInterval: -1,
        },
        extra.signal,
      );
      return client.json("GET", sb(created.id), undefined, extra.signal);
    },
  },
  {
    name: "list_sandboxes",
    description: "List sandboxes, optionally only those in some states or with given metadata.",
    input: {
      state: z
        .array(z.enum(["running", "starting", "paused", "stopped", "archived"]))
        .optional()
        .describe("only these states"),
      metadata: metadata.optional().describe("only sandboxes with all these metadata pairs"),
    },
    async run({ client, extra }, a) {
      const q = new URLSearchParams();
      for (const s of (a.state as string[] | undefined) ?? []) q.append("state", s);
      for (const [k, v] of Object.entries((a.metadata as Record<string, string> | undefined) ?? {}))
        q.append(`metadata.${k}`, v);
      const qs = q.toString();
      return client.json("GET", `/v1/sandboxes${qs === "" ? "" : `?${qs}`}`, undefined, extra.signal);
    },
  },
  {
    name: "kill_sandbox",
    description: "Delete a sandbox and everything in it (its snapshots stay).",
    input: { sandboxId },
    async run({ client, extra }, a) {
      await client.json("DELETE", sb(a.sandboxId), undefined, extra.signal);
      return { sandboxId: a.sandboxId, killed: true };
    },
  },
  {
    name: "exec",
    description:
      "Run a shell command (bash -l -c) in a sandbox and wait for it. Output is streamed as it comes as logging notifications (and progress notifications when the call has a progress token); the result has the exit code and the output (each stream's first 256 KiB).",
    input: {
      sandboxId,
      command: z
        .string()
        .min(1)
        .max(128 * 1024 - 1),
      cwd: z.string().max(4096).optional(),
      envs: z.record(z.string(), z.string()).optional(),
      stdin: z
        .string()
        .max(1024 * 1024)
        .optional(),
      timeoutMs: z.number().int().min(0).max(86_400_000).optional().describe("0 or absent: no limit"),
    },
    async run({ client, extra }, a) {
      const { sandboxId: id, ...body } = a;
      const res = await client.request("POST", `${sb(id)}/exec/stream`, { json: body, signal: extra.signal });
      const out = new Kept();
      const err = new Kept();
      const progressToken = extra._meta?.progressToken;
      let n = 0;
      let exit: { exitCode: number; error?: string } | undefined;
      const notify = async (stream: "stdout" | "stderr", data: string) => {
        n += 1;
        await extra.sendNotification({
          method: "notifications/message",
          params: { level: stream === "stdout" ? "info" : "warning", logger: `exec.${stream}`, data },
        });
        if (progressToken !== undefined)
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken, progress: n, message: data },
          });
      };
      const decoder = new TextDecoder();
      let pending = "";
      const line = async (l: string) => {
        if (l.trim() === "") return;
        const ev = JSON.parse(l) as {
          type: string;
          data?: string;
          exitCode?: number;
          error?: string;
          message?: string;
          code?: string;
        };
        if (ev.type === "stdout" || ev.type === "stderr") {
          (ev.type === "stdout" ? out : err).add(ev.data ?? "");
          await notify(ev.type, ev.data ?? "");
        } else if (ev.type === "exit") {
          exit = { exitCode: ev.exitCode ?? -1, ...(ev.error !== undefined ? { error: ev.error } : {}) };
        } else if (ev.type === "error") {
          throw new DnahApiError(500, ev.code ?? "internal", ev.message ?? "the command failed");
        }
      };
      for await (const chunk of res.body ?? []) {
        pending += decoder.decode(chunk as Uint8Array, { stream: true });
        let i = pending.indexOf("\n");
        while (i >= 0) {
          await line(pending.slice(0, i));
          pending = pending.slice(i + 1);
          i = pending.indexOf("\n");
        }
      }
      await line(pending + decoder.decode());
      if (exit === undefined)
        throw new DnahApiError(502, "unavailable", "the command's stream ended without an exit");
      return {
        ...(exit as { exitCode: number; error?: string }),
        stdout: out.text,
        stderr: err.text,
        truncated: out.dropped || err.dropped,
      };
    },
  },
  {
    name: "run_code",
    description:
      "Run a code snippet in a sandbox: python (python3), javascript or typescript (the guest's Node runtime), or bash. The code is fed on stdin; returns exit code, stdout, stderr.",
    input: {
      sandboxId,
      code: z
        .string()
        .min(1)
        .max(1024 * 1024),
      language: z.enum(["python", "javascript", "typescript", "bash"]).default("python"),
      timeoutMs: z.number().int().min(0).max(86_400_000).optional(),
    },
    async run({ client, extra }, a) {
      const language = a.language as keyof typeof CODE_COMMANDS;
      return client.json(
        "POST",
        `${sb(a.sandboxId)}/exec`,
        {
          command: CODE_COMMANDS[language],
          stdin: a.code,
          ...(a.timeoutMs !== undefined ? { timeoutMs: a.timeoutMs } : {}),
        },
        extra.signal,
      );
    },
  },
  {
    name: "read_file",
    description: `Read a file of a sandbox (at most ${READ_LIMIT_BYTES} bytes; larger files are refused). Relative paths are from /home/user.`,
    input: {
      sandboxId,
      path: z.string().min(1).max(4096),
      encoding: z.enum(["utf8", "base64"]).default("utf8").describe("base64 for binary files"),
    },
    async run({ client, extra }, a) {
      const res = await client.request("GET", `${sb(a.sandboxId)}/files?path=${enc(String(a.path))}`, {
        signal: extra.signal,
      });
      const bytes = await readBounded(res, READ_LIMIT_BYTES);
      if (bytes === undefined)
        throw new DnahApiError(
          413,
          "payload_too_large",
          `file '${a.path}' is larger than ${READ_LIMIT_BYTES} bytes: read part of it with exec (head -c, sed -n) instead`,
        );
      const content =
        a.encoding === "base64" ? Buffer.from(bytes).toString("base64") : Buffer.from(bytes).toString("utf8");
      return { path: a.path, sizeBytes: bytes.byteLength, encoding: a.encoding, content };
    },
  },
  {
    name: "write_file",
    description: "Write a file in a sandbox (created with its parent folders, or replaced).",
    input: {
      sandboxId,
      path: z.string().min(1).max(4096),
      content: z.string().max(16 * 1024 * 1024),
      encoding: z.enum(["utf8", "base64"]).default("utf8"),
    },
    async run({ client, extra }, a) {
      const body = Buffer.from(String(a.content), a.encoding === "base64" ? "base64" : "utf8");
      const res = await client.request("PUT", `${sb(a.sandboxId)}/files?path=${enc(String(a.path))}`, {
        body,
        signal: extra.signal,
      });
      return { ...((await res.json()) as object), sizeBytes: body.byteLength };
    },
  },
  {
    name: "list_files",
    description: "List a folder of a sandbox (default: the home, /home/user).",
    input: { sandboxId, path: z.string().min(1).max(4096).optional() },
    async run({ client, extra }, a) {
      const q = a.path === undefined ? "" : `?path=${enc(String(a.path))}`;
      return client.json("GET", `${sb(a.sandboxId)}/files/list${q}`, undefined, extra.signal);
    },
  },
  {
    name: "pause_sandbox",
    description:
      "Pause a running sandbox: every process frozen, memory and disk kept. resume_sandbox thaws it.",
    input: { sandboxId },
    run: ({ client, extra }, a) => client.json("POST", `${sb(a.sandboxId)}/pause`, undefined, extra.signal),
  },
  {
    name: "resume_sandbox",
    description: "Resume a paused (or archived) sandbox where it was.",
    input: { sandboxId },
    run: ({ client, extra }, a) => client.json("POST", `${sb(a.sandboxId)}/resume`, undefined, extra.signal),
  },
  {
    name: "snapshot_sandbox",
    description: "Take a signed snapshot of a sandbox (memory and disk); it keeps running.",
    input: { sandboxId, name: z.string().min(1).max(128).optional() },
    run: ({ client, extra }, a) =>
      client.json(
        "POST",
        `${sb(a.sandboxId)}/snapshot`,
        a.name === undefined ? {} : { name: a.name },
        extra.signal,
      ),
  },
  {
    name: "restore_snapshot",
    description: "Start a new sandbox from a snapshot (by id or name).",
    input: { snapshot: z.string().min(1).max(128) },
    run: ({ client, extra }, a) =>
      client.json("POST", `/v1/snapshots/${enc(String(a.snapshot))}/restore`, {}, extra.signal),
  },
  {
    name: "fork_sandbox",
    description:
      "Fork a running sandbox: each clone starts from its current memory and disk (running processes included).",
    input: { sandboxId, count: z.number().int().min(1).max(16).default(1) },
    run: ({ client, extra }, a) =>
      client.json("POST", `${sb(a.sandboxId)}/fork`, { count: a.count }, extra.signal),
  },
  {
    name: "expose_port",
    description:
      "Get an HTTP URL that reaches a port of a sandbox (something must listen on it, on any address). Anyone with the URL reaches the port; the token in it is the sandbox's. Only sandboxes made by create_sandbox have port URLs.",
    input: { sandboxId, port: z.number().int().min(1).max(65_535) },
    async run({ client, publicUrl, extra }, a) {
      let link: { url: string; token: string };
      try {
        link = await client.json(
          "GET",
          `/api/sandbox/${enc(String(a.sandboxId))}/ports/${a.port}/preview-url`,
          undefined,
          extra.signal,
        );
      } catch (err) {
        if (err instanceof DnahApiError && err.status === 404)
          throw new DnahApiError(
            404,
            "not_found",
            `sandbox '${a.sandboxId}' has no port URLs: only sandboxes made by create_sandbox (or the Daytona API) have them, not forks or restored snapshots (${err.message})`,
          );
        throw err;
      }
      const path = new URL(link.url).pathname;
      return {
        sandboxId: a.sandboxId,
        port: a.port,
        url: `${publicUrl.replace(/\/+$/, "")}${path}?DAYTONA_SANDBOX_AUTH_KEY=${enc(link.token)}`,
        token: link.token,
        note: "append paths before the query (…/<port>/path?DAYTONA_SANDBOX_AUTH_KEY=…), or send the token as X-Daytona-Preview-Token",
      };
    },
  },
];
