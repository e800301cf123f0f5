import assert from "node:assert/strict";
import { it } from "node:test";
import { newSandboxId, newSnapshotId, SANDBOX_ID_RE, SNAPSHOT_ID_RE } from "../src/domain/ids.js";

it("sandbox ids are 20 characters of [a-z0-9], unique, and use the whole alphabet", () => {
  const ids = Array.from({ length: 5_000 }, newSandboxId);
  for (const id of ids) {
    assert.match(id, /^[a-z0-9]+$/);
    assert.equal(id.length, 20);
    assert.match(id, SANDBOX_ID_RE);
  }
  assert.equal(new Set(ids).size, ids.length);
  const seen = new Set(ids.join(""));
  assert.equal(seen.size, 36);
});

it("snapshot ids are snap_ + 20 of [a-z0-9], unique, and fit the vmm's folder names", () => {
  const ids = Array.from({ length: 2_000 }, newSnapshotId);
  for (const id of ids) {
    assert.match(id, SNAPSHOT_ID_RE);
    assert.match(id, /^[a-z0-9_-]{1,64}$/);
  }
  assert.equal(new Set(ids).size, ids.length);
});
