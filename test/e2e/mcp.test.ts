import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { TOOLS } from "@dnah/mcp";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { type CallToolResult, LoggingMessageNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import { eventually, startTestStack, type TestStack } from "./harness.js";

type Json = Record<string, unknown>;
const REPO = fileURLToPath(new URL("../..", import.meta.url));

/**
 * The MCP server (`@dnah/mcp`) driven by the official SDK's Client over both transports —
 * stdio (`dnah mcp` as its own process) and streamable HTTP (the gateway's `/mcp`) — calling
 * every tool on real sandboxes.
 */
describe("MCP server with the official @modelcontextprotocol/sdk client", () => {
  let s: TestStack;
  const leftovers = new Set<string>();

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "2" });
  });
  after(async () => {
    for (const id of leftovers)
      await s.api(`/v1/sandboxes/${id}`, { method: "DELETE" }).catch(() => undefined);
    await s?.close();
  });

  /** Progress notifications as they came off the wire, per client. */
  const wireProgress = new WeakMap<Client, string[]>();

  async function connect(transport: Transport): Promise<Client> {
    const client = new Client({ name: "dnah-mcp-test", version: "0.0.0" });
    await client.connect(transport);
    // The SDK client drops a progress notification that arrives in the same read as its
    // request's response (it retires the handler synchronously but dispatches notifications a
    // microtask later: modelcontextprotocol/typescript-sdk#2580). What the server sent is
    // therefore read here, ahead of the SDK's dispatch.
    const seen: string[] = [];
    wireProgress.set(client, seen);
    const dispatch = transport.onmessage;
    transport.onmessage = (message, extra) => {
      const m = message as { method?: string; params?: { message?: string } };
      if (m.method === "notifications/progress") seen.push(m.params?.message ?? "");
      dispatch?.(message, extra);
    };
    return client;
  }

  /** A tool's text answer, parsed; fails the test on a tool error. */
  async function call<T = Json>(client: Client, name: string, args: Json): Promise<T> {
    const r = (await client.callTool({ name, arguments: args })) as CallToolResult;
    const text = (r.content[0] as { text: string }).text;
    assert.ok(!r.isError, `${name} failed: ${text}`);
    return JSON.parse(text) as T;
  }
  /** A tool error's message. */
  async function fails(client: Client, name: string, args: Json): Promise<string> {
    const r = (await client.callTool({ name, arguments: args })) as CallToolResult;
    assert.equal(r.isError, true, `${name} should fail`);
    const text = (r.content[0] as { text: string }).text;
    assert.doesNotMatch(text, /\n\s+at /, "no stack trace");
    return text;
  }

  /** Every tool, on real sandboxes, through one client. */
  async function everyTool(client: Client, label: string): Promise<void> {
    const tools = await client.listTools();
    assert.deepEqual(tools.tools.map((t) => t.name).sort(), TOOLS.map((t) => t.name).sort());

    const sb = await call(client, "create_sandbox", { envVars: { GREETING: "hi" } });
    const id = sb.sandboxId as string;
    leftovers.add(id);
    assert.equal(sb.state, "running");
    assert.deepEqual(sb.lifecycle && (sb.lifecycle as Json).autoStopMinutes, 0, "never stops by itself");

    const listed = await call<{ sandboxes: Json[] }>(client, "list_sandboxes", { state: ["running"] });
    assert.ok(
      listed.sandboxes.some((x) => x.sandboxId === id),
      "list has the new sandbox",
    );

    const none = await call<{ sandboxes: Json[] }>(client, "list_sandboxes", {
      metadata: { suite: "none-such" },
    });
    assert.deepEqual(none.sandboxes, []);

    // exec, streamed: every chunk arrives as a notification, the result has all of it.
    const logged: string[] = [];
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
      logged.push(String(n.params.data));
    });
    const progress: string[] = [];
    const r = (await client.callTool(
      {
        name: "exec",
        arguments: { sandboxId: id, command: 'echo "one $GREETING"; sleep 0.3; echo two >&2; echo three' },
      },
      undefined,
      { onprogress: (p) => progress.push(p.message ?? "") },
    )) as CallToolResult;
    assert.ok(!r.isError, JSON.stringify(r.content));
    const ex = JSON.parse((r.content[0] as { text: string }).text) as Json;
    assert.equal(ex.exitCode, 0);
    assert.equal(ex.stdout, "one hi\nthree\n");
    assert.equal(ex.stderr, "two\n");
    const wire = wireProgress.get(client) ?? [];
    assert.equal(wire.join(""), logged.join(""), "a progress notification for every chunk");
    assert.deepEqual(progress, wire.slice(0, progress.length), "those the SDK delivered, in order");
    assert.deepEqual(wire.join("").split("\n").sort(), ["", "one hi", "three", "two"]);
    const failed = await call(client, "exec", { sandboxId: id, command: "exit 3" });
    assert.equal(failed.exitCode, 3);

    // run code
    const py = await call(client, "run_code", { sandboxId: id, language: "python", code: "print(6 * 7)" });
    assert.equal(py.stdout, "42\n");
    const js = await call(client, "run_code", {
      sandboxId: id,
      language: "javascript",
      code: "console.log([1,2].map(x => x * 2).join(','))",
    });
    assert.equal(js.stdout, "2,4\n", JSON.stringify(js));

    // files: write, read, list; bounded reads; clear errors
    const written = await call(client, "write_file", {
      sandboxId: id,
      path: "work/notes.txt",
      content: `hello from ${label}\n`,
    });
    assert.equal(written.path, "/home/user/work/notes.txt");
    const read = await call(client, "read_file", { sandboxId: id, path: "/home/user/work/notes.txt" });
    assert.equal(read.content, `hello from ${label}\n`);
    await call(client, "write_file", {
      sandboxId: id,
      path: "bin.dat",
      content: Buffer.from([0, 255, 1]).toString("base64"),
      encoding: "base64",
    });
    assert.equal(
      (await call(client, "read_file", { sandboxId: id, path: "bin.dat", encoding: "base64" })).content,
      "AP8B",
    );
    const entries = (await call<{ entries: Json[] }>(client, "list_files", { sandboxId: id, path: "work" }))
      .entries;
    assert.deepEqual(
      entries.map((e) => [e.name, e.type]),
      [["notes.txt", "file"]],
    );
    assert.ok(
      (await call<{ entries: Json[] }>(client, "list_files", { sandboxId: id })).entries.some(
        (e) => e.name === "work",
      ),
    );
    await call(client, "exec", { sandboxId: id, command: "head -c 2000000 /dev/zero > big.bin" });
    assert.match(
      await fails(client, "read_file", { sandboxId: id, path: "big.bin" }),
      /^payload_too_large: .*larger than 1048576 bytes/,
    );
    assert.match(await fails(client, "read_file", { sandboxId: id, path: "/nope/missing" }), /^not_found: /);

    // a port, served from inside the sandbox, reached by the URL expose_port gives
    await call(client, "exec", {
      sandboxId: id,
      command:
        "mkdir -p site && echo served-by-sandbox > site/index.html && (setsid python3 -m http.server 8000 --directory site >/dev/null 2>&1 &)",
    });
    const port = await call(client, "expose_port", { sandboxId: id, port: 8000 });
    const url = port.url as string;
    assert.ok(url.startsWith(s.url), url);
    await eventually(async () => {
      const res = await fetch(url);
      return res.status === 200 && (await res.text()) === "served-by-sandbox\n";
    }, 20_000);

    // pause → resume
    assert.equal((await call(client, "pause_sandbox", { sandboxId: id })).state, "paused");
    assert.match(
      await fails(client, "exec", { sandboxId: id, command: "true" }),
      /^failed_precondition: .*paused/,
    );
    assert.equal((await call(client, "resume_sandbox", { sandboxId: id })).state, "running");
    assert.equal(
      (await call(client, "exec", { sandboxId: id, command: "cat work/notes.txt" })).stdout,
      `hello from ${label}\n`,
    );

    // snapshot → restore, fork: the clones have the file
    const snap = (await call(client, "snapshot_sandbox", { sandboxId: id, name: `mcp-${label}` }))
      .snapshot as Json;
    assert.equal(snap.name, `mcp-${label}`);
    const restored = (await call(client, "restore_snapshot", { snapshot: `mcp-${label}` })).sandbox as Json;
    leftovers.add(restored.sandboxId as string);
    const forked = (await call<{ results: Json[] }>(client, "fork_sandbox", { sandboxId: id })).results;
    assert.equal(forked.length, 1);
    const clone = (forked[0]!.sandbox as Json).sandboxId as string;
    leftovers.add(clone);
    for (const other of [restored.sandboxId as string, clone]) {
      assert.equal(
        (await call(client, "read_file", { sandboxId: other, path: "work/notes.txt" })).content,
        `hello from ${label}\n`,
      );
      assert.match(await fails(client, "expose_port", { sandboxId: other, port: 8000 }), /no port URLs/);
    }

    // kill → gone
    for (const x of [clone, restored.sandboxId as string, id]) {
      assert.equal((await call(client, "kill_sandbox", { sandboxId: x })).killed, true);
      leftovers.delete(x);
    }
    const after = await call<{ sandboxes: Json[] }>(client, "list_sandboxes", {});
    assert.ok(!after.sandboxes.some((x) => x.sandboxId === id), "killed sandbox is gone");
    assert.match(await fails(client, "pause_sandbox", { sandboxId: id }), /^not_found: /);
    // bad input is the SDK's validation error, not a crash
    assert.ok((await client.callTool({ name: "exec", arguments: { sandboxId: id } })).isError);
  }

  test("stdio: `dnah mcp` as its own process", async () => {
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: ["--import", "tsx", "packages/cli/src/main.ts", "mcp"],
      cwd: REPO,
      env: { ...(process.env as Record<string, string>), DNAH_URL: s.url, DNAH_API_KEY: s.key },
      stderr: "inherit",
    });
    const client = await connect(transport);
    try {
      await everyTool(client, "stdio");
    } finally {
      await client.close();
    }
  });

  test("streamable HTTP at the gateway's /mcp, with the API key", async () => {
    const client = await connect(
      new StreamableHTTPClientTransport(new URL(`${s.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${s.key}` } },
      }),
    );
    try {
      await everyTool(client, "http");
    } finally {
      await client.close();
    }
  });

  test("/mcp is authenticated like every route; a bad key fails every tool call", async () => {
    const res = await fetch(`${s.url}/mcp`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as Json).code, "unauthenticated");
    assert.equal((await s.api("/mcp")).status, 405);

    const transport = new StdioClientTransport({
      command: process.execPath,
      args: ["--import", "tsx", "packages/cli/src/main.ts", "mcp"],
      cwd: REPO,
      env: {
        ...(process.env as Record<string, string>),
        DNAH_URL: s.url,
        DNAH_API_KEY: "dnah_notakey0000000000000000000000",
      },
      stderr: "ignore",
    });
    const client = await connect(transport);
    try {
      assert.match(await fails(client, "list_sandboxes", {}), /^unauthenticated: invalid API key/);
    } finally {
      await client.close();
    }
  });
});
