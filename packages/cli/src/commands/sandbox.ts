import type { DnahClient } from "@dnah/mcp/client";
import type { Env } from "@dnah/platform";
import { apiClient, CliError, EXIT, keyValues, out, positiveInt, printJson, table } from "../api.js";

/** `dnah sandbox …`: the native REST API of the gateway (DNAH_URL, DNAH_API_KEY). */

type Json = Record<string, unknown>;

export interface CreateOptions {
  template?: string;
  type?: string;
  metadata?: string[];
  env?: string[];
  json?: boolean;
}

const TYPES = ["persistent", "ephemeral"];
const sb = (id: string) => `/v1/sandboxes/${encodeURIComponent(id)}`;

/** The POST /v1/sandboxes body of `sandbox create` (pure). */
export function createBody(opts: CreateOptions): Json {
  if (opts.type !== undefined && !TYPES.includes(opts.type))
    throw new CliError(`--type is persistent or ephemeral, not '${opts.type.slice(0, 50)}'`, EXIT.usage);
  const metadata = keyValues(opts.metadata, "--metadata");
  const envVars = keyValues(opts.env, "--env");
  return {
    ...(opts.template !== undefined ? { templateId: opts.template } : {}),
    ...(opts.type !== undefined ? { type: opts.type } : {}),
    ...(Object.keys(metadata).length > 0 ? { metadata } : {}),
    ...(Object.keys(envVars).length > 0 ? { envVars } : {}),
  };
}

export async function sandboxCreate(opts: CreateOptions, env: Env): Promise<void> {
  const body = createBody(opts);
  const sandbox = await apiClient(env).json("POST", "/v1/sandboxes", body);
  await (opts.json ? printJson(sandbox) : out(`${sandbox.sandboxId}\n`));
}

/** The `sandbox list` table (pure): ID, STATE, TEMPLATE, CREATED, LAST ACTIVITY, METADATA. */
export function formatSandboxTable(sandboxes: readonly Json[]): string {
  const time = (v: unknown) => (typeof v === "string" ? `${v.slice(0, 19)}Z` : "-");
  return table([
    ["ID", "STATE", "TEMPLATE", "CREATED", "LAST ACTIVITY", "METADATA"],
    ...sandboxes.map((s) => [
      String(s.sandboxId),
      String(s.state),
      String(s.templateId),
      time(s.createdAt),
      time(s.lastActivityAt),
      Object.entries((s.metadata as Record<string, string> | undefined) ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(",") || "-",
    ]),
  ]);
}

export async function sandboxList(opts: { state?: string; json?: boolean }, env: Env): Promise<void> {
  const q = opts.state !== undefined ? `?state=${encodeURIComponent(opts.state)}` : "";
  const { sandboxes } = await apiClient(env).json<{ sandboxes: Json[] }>("GET", `/v1/sandboxes${q}`);
  await (opts.json ? printJson(sandboxes) : out(formatSandboxTable(sandboxes)));
}

/** `kill`, `pause`, `resume`: one call, the id (or the sandbox as JSON) on stdout. */
export async function sandboxAction(
  action: "kill" | "pause" | "resume",
  id: string,
  opts: { json?: boolean },
  env: Env,
): Promise<void> {
  const client = apiClient(env);
  if (action === "kill") {
    await client.json("DELETE", sb(id));
    await (opts.json ? printJson({ sandboxId: id, deleted: true }) : out(`${id}\n`));
    return;
  }
  const sandbox = await client.json("POST", `${sb(id)}/${action}`, {});
  await (opts.json ? printJson(sandbox) : out(`${id} ${String(sandbox.state ?? "")}\n`));
}

/** `fork`: new sandboxes from a running one; one id a line. A clone that failed fails the command. */
export async function sandboxFork(
  id: string,
  opts: { count?: string; json?: boolean },
  env: Env,
): Promise<void> {
  const count = positiveInt(opts.count, "--count");
  const { results } = await apiClient(env).json<{ results: Json[] }>(
    "POST",
    `${sb(id)}/fork`,
    count !== undefined ? { count } : {},
  );
  if (opts.json) await printJson(results);
  else for (const r of results) if (r.sandbox) await out(`${(r.sandbox as Json).sandboxId}\n`);
  const failed = results.filter((r) => r.sandbox === undefined);
  if (failed.length > 0)
    throw new CliError(
      `${failed.length} of ${results.length} clones failed: ${failed.map((r) => String(r.error)).join("; ")}`,
    );
}

export async function sandboxSnapshot(
  id: string,
  opts: { name?: string; json?: boolean },
  env: Env,
): Promise<void> {
  const { snapshot } = await apiClient(env).json<{ snapshot: Json }>(
    "POST",
    `${sb(id)}/snapshot`,
    opts.name !== undefined ? { name: opts.name } : {},
  );
  await (opts.json ? printJson(snapshot) : out(`${snapshot.snapshotId}\n`));
}

export interface ExecOptions {
  cwd?: string;
  env?: string[];
}

/**
 * `exec <id> -- <cmd...>`: the words are joined by spaces and run by the sandbox's login bash
 * (as ssh does), output streamed as it comes; resolves to the command's exit code.
 */
export async function sandboxExec(id: string, words: string[], opts: ExecOptions, env: Env): Promise<number> {
  // Commander keeps the `--` that ends dnah's own options: it is not part of the command.
  const command = words[0] === "--" ? words.slice(1) : words;
  if (command.length === 0)
    throw new CliError("give the command after --: dnah sandbox exec <id> -- <cmd…>", EXIT.usage);
  const envs = keyValues(opts.env, "--env");
  return streamExec(apiClient(env), id, {
    command: command.join(" "),
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    ...(Object.keys(envs).length > 0 ? { envs } : {}),
  });
}

/** Reads the NDJSON of POST /exec/stream, writing stdout and stderr as they come. */
async function streamExec(client: DnahClient, id: string, body: Json): Promise<number> {
  const res = await client.request("POST", `${sb(id)}/exec/stream`, { json: body });
  const reader = res.body?.pipeThrough(new TextDecoderStream()).getReader();
  if (reader === undefined) throw new CliError("the gateway answered without a body");
  let buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += value;
    let nl = buf.indexOf("\n");
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      nl = buf.indexOf("\n");
      if (line === "") continue;
      const ev = JSON.parse(line) as Json;
      if (ev.type === "stdout") await out(String(ev.data));
      else if (ev.type === "stderr") await out(String(ev.data), process.stderr);
      else if (ev.type === "error") throw new CliError(`${ev.code}: ${ev.message}`);
      else if (ev.type === "exit") {
        await reader.cancel();
        const code = Number(ev.exitCode);
        if (ev.error !== undefined) process.stderr.write(`dnah: ${String(ev.error)}\n`);
        return Number.isInteger(code) && code >= 0 && code <= 255 ? code : EXIT.failure;
      }
    }
  }
  throw new CliError("the command's output ended without an exit status");
}
