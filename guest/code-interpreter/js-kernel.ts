/**
 * The code interpreter's JavaScript/TypeScript kernel: one process per context, started by
 * server.py with the agent's Node runtime and bundled next to it
 * (`dist/code-interpreter/js-kernel.mjs`):
 *
 *   js-kernel.mjs --language <javascript|typescript> --fd <n>
 *
 * fd <n> is a Unix socket to the server carrying JSON lines. Requests, run one at a time:
 *   {"id": 1, "code": "…", "env": {"K": "v" | null}, "restore": {"K": "v" | null}}
 * (`env` is applied to process.env before the cell, `restore` after it; null unsets). Replies:
 *   {"id", "type": "number_of_executions", "execution_count"}
 *   {"id", "type": "stdout" | "stderr", "text"}       console output and process.stdout/err writes
 *   {"id", "type": "result", "is_main_result": true, "text"}
 *   {"id", "type": "error", "name", "value", "traceback"}
 *   {"id", "type": "end"}
 * Output written while no cell runs (timers, late promises) carries `"id": null`. SIGINT
 * interrupts the running cell. The kernel exits when the socket closes.
 */
import { createRequire, isBuiltin } from "node:module";
import { Socket } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { inspect, parseArgs } from "node:util";
import { runInThisContext } from "node:vm";
import { type CellLanguage, compileCell, IMPORT_HELPER } from "./cell.js";

interface Request {
  id: number;
  code: string;
  env?: Record<string, string | null>;
  restore?: Record<string, string | null>;
}

class Interrupted extends Error {
  constructor() {
    super("Execution interrupted");
    this.name = "KeyboardInterrupt";
  }
}

const { values } = parseArgs({
  options: { language: { type: "string" }, fd: { type: "string" } },
  strict: true,
});
const language = values.language as CellLanguage;
const fd = Number(values.fd);
if ((language !== "javascript" && language !== "typescript") || !Number.isInteger(fd) || fd < 3) {
  process.stderr.write("usage: js-kernel --language <javascript|typescript> --fd <n>\n");
  process.exit(2);
}

const realStderr = process.stderr.write.bind(process.stderr) as (s: string) => boolean;
const channel = new Socket({ fd, readable: true, writable: true });
channel.on("close", () => process.exit(0));
channel.on("error", (err) => {
  realStderr(`js-kernel: channel error: ${err.message}\n`);
  process.exit(1);
});

let current: number | null = null;
let executions = 0;
let interrupt: ((err: Error) => void) | undefined;

function send(msg: Record<string, unknown>): void {
  channel.write(`${JSON.stringify(msg)}\n`);
}

// Console output and direct writes go through the channel, in order with results and errors;
// what child processes write to the inherited fds reaches the server on the raw pipes.
function capture(stream: NodeJS.WriteStream, type: "stdout" | "stderr"): void {
  (stream as unknown as { write: unknown }).write = (
    chunk: string | Uint8Array,
    encoding?: BufferEncoding | ((err?: Error) => void),
    cb?: (err?: Error) => void,
  ): boolean => {
    const text =
      typeof chunk === "string"
        ? chunk
        : Buffer.from(chunk).toString(typeof encoding === "string" ? encoding : "utf8");
    send({ id: current, type, text });
    const done = typeof encoding === "function" ? encoding : cb;
    if (done) process.nextTick(done);
    return true;
  };
}
capture(process.stdout, "stdout");
capture(process.stderr, "stderr");

const cellRequire = createRequire(join(process.cwd(), "[cell].js"));
Object.assign(globalThis, {
  require: cellRequire,
  [IMPORT_HELPER]: (spec: string): Promise<unknown> => {
    if (isBuiltin(spec)) return import(spec);
    try {
      return import(pathToFileURL(cellRequire.resolve(spec)).href);
    } catch {
      // ESM-only packages and URLs: let import() resolve them itself
      return import(spec);
    }
  },
});

process.on("SIGINT", () => interrupt?.(new Interrupted()));
process.on("uncaughtException", (err) =>
  send({ id: current, type: "stderr", text: `${err.stack ?? err}\n` }),
);
process.on("unhandledRejection", (err) =>
  send({
    id: current,
    type: "stderr",
    text: `Unhandled rejection: ${err instanceof Error ? err.stack : inspect(err)}\n`,
  }),
);

function applyEnv(env: Record<string, string | null> | undefined): void {
  for (const [k, v] of Object.entries(env ?? {})) {
    if (v === null) delete process.env[k];
    else process.env[k] = v;
  }
}

function display(value: unknown): string {
  if (typeof value === "string") return value;
  return inspect(value, { depth: 4, maxArrayLength: 100, breakLength: 100 });
}

/** The stack without the kernel's own frames (vm, this file, the task queue). */
function cellStack(err: Error): string {
  const stack = err.stack ?? `${err.name}: ${err.message}`;
  return stack
    .split("\n")
    .filter((l) => !/^\s+at .*(node:vm:|node:internal\/|js-kernel\.mjs|sigintHandlersWrap)/.test(l))
    .join("\n");
}

function errorMessage(err: unknown): Record<string, unknown> {
  if (err instanceof Error)
    return { type: "error", name: err.name, value: err.message, traceback: cellStack(err) };
  return { type: "error", name: "Error", value: inspect(err), traceback: `Uncaught ${inspect(err)}` };
}

async function run(req: Request): Promise<void> {
  current = req.id;
  executions++;
  send({ id: req.id, type: "number_of_executions", execution_count: executions });
  applyEnv(req.env);
  try {
    const script = compileCell(req.code, language);
    const interrupted = new Promise<never>((_, reject) => {
      interrupt = reject;
    });
    const promise = runInThisContext(script, {
      filename: `cell-${executions}.${language === "typescript" ? "ts" : "js"}`,
      breakOnSigint: true,
    }) as Promise<unknown>;
    const value = await Promise.race([promise, interrupted]);
    if (value !== undefined) send({ id: req.id, type: "result", is_main_result: true, text: display(value) });
  } catch (err) {
    send({ id: req.id, ...errorMessage(err) });
  } finally {
    interrupt = undefined;
    applyEnv(req.restore);
    send({ id: req.id, type: "end" });
    current = null;
  }
}

// Cells run one after another, in the order they arrive.
let queue: Promise<void> = Promise.resolve();
createInterface({ input: channel, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) => {
  let req: Request;
  try {
    req = JSON.parse(line) as Request;
  } catch {
    realStderr(`js-kernel: ignoring a malformed request line\n`);
    return;
  }
  queue = queue.then(() => run(req));
});
