import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { rm, writeFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { startTestStack, type TestStack } from "./harness.js";

const HERE = fileURLToPath(new URL("./", import.meta.url));
const DOCS = fileURLToPath(new URL("../../docs/", import.meta.url));
/** One example's bound: a code-interpreter sandbox or a fork can take a while on a busy host. */
const BLOCK_TIMEOUT_MS = 300_000;

interface Block {
  name: string;
  lang: "sh" | "ts";
  code: string;
}

/** Every ```sh and ```ts block of a markdown file, named by file and line. */
function blocksOf(file: string): Block[] {
  const text = readFileSync(`${DOCS}${file}`, "utf8");
  const out: Block[] = [];
  for (const m of text.matchAll(/^```(sh|ts)\n([\s\S]*?)^```$/gm)) {
    const line = text.slice(0, m.index).split("\n").length;
    out.push({ name: `${file}:${line} (${m[1]})`, lang: m[1] as "sh" | "ts", code: m[2] ?? "" });
  }
  return out;
}

/** Runs a command to its end; resolves with its exit code and output. */
function run(cmd: string, args: string[], env: Record<string, string>, cwd: string) {
  return new Promise<{ code: number | null; out: string; err: string }>((resolve, reject) => {
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

const FILES = ["llms.txt", "llms-full.txt"] as const;
const blocks = FILES.flatMap(blocksOf);

/**
 * The examples of docs/llms.txt and docs/llms-full.txt, extracted and run as they are against a
 * real stack: shell blocks with bash (-e, pipefail) and DNAH_URL / DNAH_API_KEY set, TypeScript
 * blocks written next to this file (so `e2b`, `@e2b/code-interpreter` and `@daytonaio/sdk`
 * resolve) and run with tsx. Every block must exit 0.
 */
describe("llms.txt: the documents and their examples", () => {
  let s: TestStack;
  let env: Record<string, string>;

  before(async () => {
    s = await startTestStack();
    env = { DNAH_URL: s.url, DNAH_API_KEY: s.key };
  });
  after(async () => {
    await s?.close();
  });

  test("served without a key, as committed, in the llms.txt shape (H1, summary, sections)", async () => {
    for (const file of FILES) {
      const r = await fetch(`${s.url}/${file}`);
      assert.equal(r.status, 200, file);
      assert.match(r.headers.get("content-type") ?? "", /^text\/plain/);
      const text = await r.text();
      assert.equal(text, readFileSync(`${DOCS}${file}`, "utf8"));
      assert.match(text, /^# dnah\n\n> \S.+\n/, `${file}: H1 then a blockquote summary`);
      assert.match(text, /^## /m, `${file}: sections`);
      assert.match(text, /\[[^\]]+\]\(\/openapi\.json\)/, `${file}: links the OpenAPI document`);
    }
    assert.ok(blocks.filter((b) => b.lang === "sh").length >= 7, "curl examples");
    assert.ok(blocks.filter((b) => b.lang === "ts").length >= 3, "SDK examples");
  });

  for (const [i, block] of blocks.entries()) {
    test(`example ${block.name} runs`, async (t) => {
      let result: Awaited<ReturnType<typeof run>>;
      if (block.lang === "sh") {
        result = await run("bash", ["-euo", "pipefail", "-c", block.code], env, HERE);
      } else {
        const file = `${HERE}.llms-example-${process.pid}-${i}.ts`;
        await writeFile(file, block.code);
        try {
          result = await run(process.execPath, ["--import", "tsx", file], env, HERE);
        } finally {
          await rm(file, { force: true });
        }
      }
      const detail = `${block.name} exited ${result.code}\n--- stdout\n${result.out.slice(-3000)}\n--- stderr\n${result.err.slice(-3000)}`;
      t.diagnostic(result.out.trim().slice(0, 400).replaceAll("\n", " | "));
      assert.equal(result.code, 0, detail);
      assert.notEqual(result.out.trim(), "", `${block.name} printed nothing`);
      // jq prints `null` for a missing field: an example that read the wrong field shows here.
      assert.doesNotMatch(result.out, /^null$/m, detail);
    });
  }
});
