/**
 * The guest's code runner for the Daytona toolbox's `codeRun` (JavaScript and TypeScript).
 * Bundled next to the agent (`dist/code-runner.mjs`) and started with the agent's Node runtime:
 *
 *   code-runner.mjs <javascript|typescript> -- [argv…]   (the program on stdin)
 *
 * TypeScript is type-stripped with sucrase (imports become `require`), then both run as a
 * CommonJS module in the current directory, the way `node -` runs a script: `require` resolves
 * from the cwd's node_modules, and `process.argv` is `[node, ...argv]` as Daytona's runner
 * leaves it. Uncaught errors print their stack and exit 1, as node does.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { compileFunction } from "node:vm";
import { transform } from "sucrase";

const [lang, sep, ...argv] = process.argv.slice(2);
if ((lang !== "javascript" && lang !== "typescript") || sep !== "--") {
  process.stderr.write("usage: code-runner <javascript|typescript> -- [argv...] < program\n");
  process.exit(2);
}
const source = readFileSync(0, "utf8");
const filename = join(process.cwd(), lang === "typescript" ? "[code].ts" : "[code].js");
const code =
  lang === "typescript"
    ? transform(source, { transforms: ["typescript", "imports"], filePath: filename }).code
    : source;
process.argv = [process.argv[0] ?? "node", ...argv];
const mod = { exports: {} as unknown };
const fn = compileFunction(code, ["exports", "require", "module", "__filename", "__dirname"], { filename });
fn.call(mod.exports, mod.exports, createRequire(filename), mod, filename, process.cwd());
