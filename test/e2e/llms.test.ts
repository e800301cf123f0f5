import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { assertRan, blocksOf, runBlock } from "./doc-examples.js";
import { startTestStack, type TestStack } from "./harness.js";

const DOCS = fileURLToPath(new URL("../../docs/", import.meta.url));

const FILES = ["llms.txt", "llms-full.txt"] as const;
const blocks = FILES.flatMap((f) => blocksOf(`${DOCS}${f}`, ["sh", "ts"]));

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
      const result = await runBlock(block, env, `llms-${i}`);
      t.diagnostic(result.out.trim().slice(0, 400).replaceAll("\n", " | "));
      assertRan(block, result);
    });
  }
});
