import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { gzipSync } from "node:zlib";
import { joinTars, tarEntriesEnd } from "../src/compat/daytona/snapshots/tar.js";

/** Daytona context tars joined into one (real tars from the system's tar, read back by it). */
const dir = mkdtempSync(join(tmpdir(), "dnah-ctx-tar-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function tarOf(name: string, files: Record<string, string | Buffer>): Buffer {
  const root = join(dir, name);
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(join(root, p, ".."), { recursive: true });
    writeFileSync(join(root, p), content);
  }
  return execFileSync("tar", ["-C", root, "-cf", "-", ...Object.keys(files)], { maxBuffer: 64 << 20 });
}

test("joined tars hold every entry; a later tar's file wins; gzip is read", () => {
  const a = tarOf("a", { "tmp/x/app.py": "print(1)\n", "shared.txt": "from a\n" });
  // A 1 MiB file of zeros ends in zero blocks that must not be taken for the archive's end.
  const b = tarOf("b", { "dir/zeros.bin": Buffer.alloc(1 << 20), "shared.txt": "from b\n" });
  const joined = joinTars([a, gzipSync(b)]);
  const names = execFileSync("tar", ["-tf", "-"], { input: joined }).toString().trim().split("\n").sort();
  assert.deepEqual(names, ["dir/zeros.bin", "shared.txt", "shared.txt", "tmp/x/app.py"]);
  const out = join(dir, "out");
  mkdirSync(out);
  execFileSync("tar", ["-C", out, "-xf", "-"], { input: joined });
  assert.equal(readFileSync(join(out, "shared.txt"), "utf8"), "from b\n");
  assert.equal(readFileSync(join(out, "tmp/x/app.py"), "utf8"), "print(1)\n");
  assert.equal(readFileSync(join(out, "dir/zeros.bin")).length, 1 << 20);
});

test("not a tar, or a truncated one, is refused", () => {
  assert.throws(() => tarEntriesEnd(Buffer.from("hello, not a tar".padEnd(1024, "x"))), /not a tar/);
  const a = tarOf("c", { "f.txt": "x".repeat(3000) });
  assert.throws(() => tarEntriesEnd(a.subarray(0, 1024)), /not a tar/);
});
