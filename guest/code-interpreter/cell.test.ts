import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { runInThisContext } from "node:vm";
import { CellSyntaxError, compileCell, IMPORT_HELPER, rewriteCell } from "./cell.js";

/** Runs cells the way the JS kernel does: one global scope shared by all of them. */
async function run(code: string, language: "javascript" | "typescript" = "javascript"): Promise<unknown> {
  return runInThisContext(compileCell(code, language)) as Promise<unknown>;
}

describe("code-interpreter cells", () => {
  test("top-level const/let/class/function persist across cells and may be declared again", async () => {
    await run("const ciA = 1; let ciB = 2; class CiK { v = 3 } function ciF(x) { return x * 10 }");
    assert.equal(await run("ciA + ciB + new CiK().v + ciF(1)"), 16);
    await run("const ciA = 5;");
    assert.equal(await run("ciA"), 5);
  });

  test("destructuring declarations bind every name", async () => {
    await run("const { ciX, ciY: [ciZ] = [] } = { ciX: 1, ciY: [2] }; let [ciP, ...ciRest] = [3, 4, 5]");
    assert.deepEqual(await run("[ciX, ciZ, ciP, ciRest]"), [1, 2, 3, [4, 5]]);
  });

  test("top-level await and the last expression as the value (awaited)", async () => {
    assert.equal(await run("const ciW = await Promise.resolve(7); ciW * 6"), 42);
    assert.equal(await run("Promise.resolve('later')"), "later");
    assert.equal(await run("'a lone string'"), "a lone string");
    assert.equal(await run("let ciNone = 1;"), undefined);
  });

  test("a function may be called before its declaration, as in a script", async () => {
    assert.equal(await run("ciEarly()\nfunction ciEarly() { return 'hoisted' }"), undefined);
    assert.equal(await run("const ciE = ciEarly2(); function ciEarly2() { return 'ok' }\nciE"), "ok");
  });

  test("TypeScript types are stripped", async () => {
    const v = await run(
      "interface P { n: number }\nconst ciP2: P = { n: 3 };\nfunction ciSq(x: number): number { return x * x }\nciSq(ciP2.n)",
      "typescript",
    );
    assert.equal(v, 9);
  });

  test("import statements become awaited imports through the helper", () => {
    const script = rewriteCell(
      "import fs, { join as j } from 'node:path'; import * as os from 'node:os'; j('a')",
    );
    assert.match(script, new RegExp(`await ${IMPORT_HELPER}\\("node:path"\\)`));
    assert.match(script, /default: fs, join: j/);
    assert.match(script, /\(os = \(await __dnahImport\("node:os"\)\)\)/);
    assert.match(script, /^var fs, j, os; /);
  });

  test("line numbers of the cell are kept in stack traces", async () => {
    await assert.rejects(run("const ciQ = 1;\n\nthrow new Error('line 3')"), (err: Error) => {
      assert.match(err.stack ?? "", /evalmachine\.<anonymous>:3:/);
      return true;
    });
  });

  test("syntax errors are CellSyntaxError named SyntaxError", () => {
    assert.throws(
      () => compileCell("let = = 1", "javascript"),
      (err: Error) => {
        assert.ok(err instanceof CellSyntaxError);
        assert.equal(err.name, "SyntaxError");
        return true;
      },
    );
    assert.throws(() => compileCell("const x: = 1", "typescript"), CellSyntaxError);
  });
});
