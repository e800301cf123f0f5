import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { createXattrStore } from "../src/filesystem/metadata.js";
import { silentLogger } from "../src/log.js";

/** The xattr store with the real python3 helper, on a real file. */
describe("xattr metadata store", () => {
  const dir = mkdtempSync(join(tmpdir(), "dnah-meta-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("a helper that exits after a restart fails none of its successor's requests", async () => {
    const file = join(dir, "f.txt");
    writeFileSync(file, "x");
    const store = createXattrStore("python3", silentLogger);
    try {
      for (let round = 0; round < 5; round++) {
        await store.replace(file, { round: String(round) });
        // Stops the helper (its stdin ends; it exits a moment later), as the idle timer does;
        // the next request starts a new one, whose answer comes after the old one's exit.
        store.close();
        await store.replace(file, { round: `${round}b` });
        assert.deepEqual(await store.read([file]), [{ round: `${round}b` }]);
      }
    } finally {
      store.close();
    }
  });
});
