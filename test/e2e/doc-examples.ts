import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { rm, writeFile } from "node:fs/promises";
import { relative } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Extraction and execution of the examples of dnah's documents (docs/llms*.txt, skills/**),
 * shared by the tests that prove those examples run as written against a real stack.
 */

/** The repository's root, for naming blocks by their file. */
export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** Where TypeScript examples are written, so `e2b`, `@e2b/code-interpreter` and `@daytonaio/sdk` resolve. */
const HERE = fileURLToPath(new URL("./", import.meta.url));
/** One example's bound: a code-interpreter sandbox or a fork can take a while on a busy host. */
const BLOCK_TIMEOUT_MS = 300_000;

export type Lang = "sh" | "bash" | "ts";

export interface Block {
  /** `<file relative to the repository>:<line> (<lang>)`. */
  name: string;
  lang: Lang;
  code: string;
}

export interface RunResult {
  code: number | null;
  out: string;
  err: string;
}

/** Every fenced block of a markdown file in one of `langs`, named by file and line. */
export function blocksOf(path: string, langs: readonly Lang[]): Block[] {
  const text = readFileSync(path, "utf8");
  const file = relative(ROOT, path);
  const out: Block[] = [];
  for (const m of text.matchAll(/^```([a-z]*)\n([\s\S]*?)^```$/gm)) {
    const lang = m[1] as Lang;
    if (!langs.includes(lang)) continue;
    const line = text.slice(0, m.index).split("\n").length;
    out.push({ name: `${file}:${line} (${lang})`, lang, code: m[2] ?? "" });
  }
  return out;
}

/** Runs a command to its end; resolves with its exit code and output. */
export function run(
  cmd: string,
  args: string[],
  env: Record<string, string>,
  cwd: string,
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, ...env },
      cwd,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), BLOCK_TIMEOUT_MS);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

/**
 * Runs one example as a reader would: shell blocks with bash (-e, -u, pipefail) and the given
 * environment (DNAH_URL / DNAH_API_KEY), so a sandbox id the block captures in a variable is
 * chained through its own commands; TypeScript blocks written next to this file and run with
 * tsx. `tag` keeps the temporary files of parallel runs apart.
 */
export async function runBlock(block: Block, env: Record<string, string>, tag: string): Promise<RunResult> {
  if (block.lang !== "ts") return run("bash", ["-euo", "pipefail", "-c", block.code], env, HERE);
  const file = `${HERE}.doc-example-${process.pid}-${tag}.ts`;
  await writeFile(file, block.code);
  try {
    return await run(process.execPath, ["--import", "tsx", file], env, HERE);
  } finally {
    await rm(file, { force: true });
  }
}

/** The assertions every example meets: exit 0, some output, and no `null` read by jq. */
export function assertRan(block: Block, result: RunResult): void {
  const detail = `${block.name} exited ${result.code}\n--- stdout\n${result.out.slice(-3000)}\n--- stderr\n${result.err.slice(-3000)}`;
  assert.equal(result.code, 0, detail);
  assert.notEqual(result.out.trim(), "", `${block.name} printed nothing`);
  // jq prints `null` for a missing field: an example that read the wrong field shows here.
  assert.doesNotMatch(result.out, /^null$/m, detail);
}
