import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { assertRan, type Block, blocksOf, ROOT, runBlock } from "./doc-examples.js";
import { startTestStack, type TestStack } from "./harness.js";

const SKILL_DIR = join(ROOT, "skills/dnah");
const SKILL = join(SKILL_DIR, "SKILL.md");
const REFERENCES = readdirSync(join(SKILL_DIR, "references"))
  .filter((f) => f.endsWith(".md"))
  .map((f) => join(SKILL_DIR, "references", f));
const DOCUMENTS = [SKILL, ...REFERENCES];

/** The frontmatter fields of the Agent Skills format; anything else is a typo. */
const FRONTMATTER_FIELDS = new Set([
  "name",
  "description",
  "license",
  "compatibility",
  "metadata",
  "allowed-tools",
]);
/** Agent Skills: lowercase letters, digits and single hyphens, at most 64 characters. */
const NAME_RE = /^[a-z0-9]+(-[a-z0-9]+)*$/;
/** The body an agent loads on activation stays short; details live in references/. */
const MAX_SKILL_LINES = 260;

/** The YAML frontmatter and the Markdown body of a SKILL.md (strict: it must open the file). */
function splitFrontmatter(text: string): { meta: unknown; body: string } {
  const m = /^---\n([\s\S]*?)\n---\n/.exec(text);
  assert.ok(m, "SKILL.md must open with a --- YAML frontmatter block ---");
  return { meta: parse(m[1] ?? ""), body: text.slice(m[0].length) };
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, "")
    .replaceAll(" ", "-");
}

function anchorsOf(path: string): Set<string> {
  const text = readFileSync(path, "utf8").replace(/^```[\s\S]*?^```$/gm, "");
  return new Set([...text.matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1] ?? "")));
}

/** Every relative Markdown link of a document (code blocks and spans left out), with its target. */
function relativeLinks(path: string): { link: string; file: string; anchor: string | undefined }[] {
  const text = readFileSync(path, "utf8")
    .replace(/^```[\s\S]*?^```$/gm, "")
    .replace(/`[^`\n]*`/g, "");
  const out = [];
  for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    const link = m[1] ?? "";
    if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue; // http:, https:, mailto:
    const [target = "", anchor] = link.split("#");
    out.push({ link, file: target === "" ? path : resolve(dirname(path), target), anchor });
  }
  return out;
}

/** The native routes of docs/openapi.json, as matchers of a concrete path. */
function openApiRoutes(): { path: string; methods: Set<string>; re: RegExp }[] {
  const doc = JSON.parse(readFileSync(join(ROOT, "docs/openapi.json"), "utf8")) as {
    paths: Record<string, Record<string, unknown>>;
  };
  return Object.entries(doc.paths).map(([path, ops]) => ({
    path,
    methods: new Set(Object.keys(ops).map((m) => m.toUpperCase())),
    // `{path}` (the share's wildcard) takes the rest; any other parameter takes one segment.
    re: new RegExp(`^${path.replace("{path}", ".+").replace(/\{[^}]+\}/g, "[^/]+")}$`),
  }));
}

/**
 * The `/v1/...` routes a document names, in prose (`GET /v1/sandboxes/{id}`) or in a curl URL
 * (`$DNAH_URL/v1/sandboxes/$SBX/exec`), with the method when one is written before it.
 * Placeholders (`{id}`, `<path>`, `$SBX`) become a plain segment; queries are dropped.
 */
function routesNamed(path: string): { method: string | undefined; route: string }[] {
  const text = readFileSync(path, "utf8");
  const out = [];
  for (const m of text.matchAll(
    /(?:\b((?:GET|PUT|POST|PATCH|DELETE)(?:\\?\|(?:GET|PUT|POST|PATCH|DELETE))*) )?(\/v1\/[^\s`"')?|]*)/g,
  )) {
    const route = (m[2] ?? "")
      .replace(/\$\{?[A-Z_]+\}?/g, "x")
      .replace(/\{[^}]+\}|<[^>]+>/g, "x")
      .replace(/[.,:;]+$/, "");
    const methods = (m[1] ?? "").split(/\\?\|/).filter(Boolean);
    if (methods.length === 0) out.push({ method: undefined, route });
    for (const method of methods) out.push({ method, route });
  }
  return out;
}

/** `# → 409 failed_precondition: …` comments: what the block's output must show. */
function expectedFailures(block: Block): { status: string; code: string }[] {
  return [...block.code.matchAll(/^# → (\d{3}) ([a-z_]+)/gm)].map((m) => ({
    status: m[1] ?? "",
    code: m[2] ?? "",
  }));
}

/** The curl examples of every document, and the SDK examples (TypeScript) of the references. */
const examples = [
  ...DOCUMENTS.flatMap((f) => blocksOf(f, ["bash"])).filter((b) => b.code.includes("curl")),
  ...REFERENCES.flatMap((f) => blocksOf(f, ["ts"])),
];

describe("skills/dnah: the agent skill", () => {
  test("SKILL.md's frontmatter is an Agent Skill's: name = folder, a description of what and when", () => {
    const { meta, body } = splitFrontmatter(readFileSync(SKILL, "utf8"));
    assert.ok(meta !== null && typeof meta === "object" && !Array.isArray(meta), "frontmatter is a mapping");
    const fields = meta as Record<string, unknown>;
    for (const k of Object.keys(fields))
      assert.ok(FRONTMATTER_FIELDS.has(k), `unknown frontmatter field '${k}'`);
    const { name, description } = fields;
    assert.equal(typeof name, "string");
    assert.match(name as string, NAME_RE);
    assert.ok((name as string).length <= 64);
    assert.equal(name, basename(SKILL_DIR), "name must equal the skill's folder");
    assert.equal(typeof description, "string");
    const d = description as string;
    assert.ok(d.length >= 100 && d.length <= 1024, `description is ${d.length} chars; 100..1024`);
    assert.match(d, /\bUse when\b/, "the description says when to use the skill");
    assert.match(body, /^# /m, "a Markdown body with a title");
    const lines = readFileSync(SKILL, "utf8").split("\n").length;
    assert.ok(lines <= MAX_SKILL_LINES, `SKILL.md has ${lines} lines; details go in references/`);
  });

  test("every relative link of SKILL.md and its references resolves to a file (and heading)", () => {
    const seen = new Set<string>();
    for (const doc of DOCUMENTS) {
      for (const { link, file, anchor } of relativeLinks(doc)) {
        const where = `${doc.slice(ROOT.length)}: (${link})`;
        assert.ok(existsSync(file), `${where}: no file ${file}`);
        if (anchor !== undefined) assert.ok(anchorsOf(file).has(anchor), `${where}: no heading #${anchor}`);
        seen.add(file);
      }
    }
    for (const ref of REFERENCES) assert.ok(seen.has(ref), `${ref} is linked from no document`);
  });

  test("every /v1 route the skill names is in docs/openapi.json, with that method", () => {
    const routes = openApiRoutes();
    let named = 0;
    for (const doc of DOCUMENTS) {
      for (const { method, route } of routesNamed(doc)) {
        named += 1;
        const where = `${doc.slice(ROOT.length)}: ${method ?? ""} ${route}`;
        const matches = routes.filter((r) => r.re.test(route));
        assert.ok(matches.length > 0, `${where}: no such route in the OpenAPI document`);
        if (method !== undefined)
          assert.ok(
            matches.some((r) => r.methods.has(method)),
            `${where}: the OpenAPI document has ${matches.map((r) => `${[...r.methods]} ${r.path}`).join("; ")}`,
          );
      }
    }
    assert.ok(named >= 30, `only ${named} routes named`);
  });

  describe("its curl examples, run as written against a real stack", () => {
    let s: TestStack;
    let env: Record<string, string>;

    before(async () => {
      s = await startTestStack();
      env = { DNAH_URL: s.url, DNAH_API_KEY: s.key };
    });
    after(async () => {
      await s?.close();
    });

    test("there are examples in SKILL.md and in the references", () => {
      assert.ok(examples.filter((b) => b.name.startsWith("skills/dnah/SKILL.md")).length >= 4);
      assert.ok(examples.filter((b) => b.name.includes("/references/")).length >= 3);
    });

    for (const [i, block] of examples.entries()) {
      test(`example ${block.name} runs`, async (t) => {
        const before = new Set((await listSandboxes(s)).map((x) => x.sandboxId));
        const result = await runBlock(block, env, `skill-${i}`);
        t.diagnostic(result.out.trim().slice(0, 400).replaceAll("\n", " | "));
        assertRan(block, result);
        for (const { status, code } of expectedFailures(block)) {
          assert.ok(
            result.out.includes(`HTTP ${status}`),
            `${block.name}: no HTTP ${status} in\n${result.out}`,
          );
          assert.ok(
            result.out.includes(`"code":"${code}"`),
            `${block.name}: no code ${code} in\n${result.out}`,
          );
        }
        // Every example cleans up after itself: no sandbox is left running or paused.
        // Every example cleans up after itself: it leaves no sandbox behind.
        const left = (await listSandboxes(s)).filter((x) => !before.has(x.sandboxId));
        assert.deepEqual(left, [], `${block.name} left sandboxes behind`);
      });
    }
  });
});

/** The callers' sandboxes (the listing leaves the warm pool out), in every visible state. */
async function listSandboxes(s: TestStack): Promise<{ sandboxId: string; state: string }[]> {
  const r = await s.json<{ sandboxes: { sandboxId: string; state: string }[] }>("/v1/sandboxes");
  assert.equal(r.status, 200);
  return r.body.sandboxes;
}
