import assert from "node:assert/strict";
import { it } from "node:test";
import { Code } from "@connectrpc/connect";
import { InvalidArgumentError, SnapshotRefusedError } from "../src/domain/errors.js";
import {
  checkForkCount,
  checkSnapshotName,
  codeSnakeName,
  isUnsigned,
  unsignedError,
  verificationError,
} from "../src/domain/snapshots.js";

it("fork counts: 0 means 1, 1..16 pass, the rest are invalid", () => {
  assert.equal(checkForkCount(0), 1);
  assert.equal(checkForkCount(1), 1);
  assert.equal(checkForkCount(16), 16);
  for (const bad of [17, 1000, 2 ** 32 - 1]) assert.throws(() => checkForkCount(bad), InvalidArgumentError);
});

it("snapshot names: optional, bounded, never shaped like an id", () => {
  assert.equal(checkSnapshotName(""), undefined);
  for (const ok of ["a", "my-snap_1.2", "team/name:v1", "x".repeat(128)])
    assert.equal(checkSnapshotName(ok), ok);
  for (const bad of ["-a", ".a", "a b", "x".repeat(129), "a\0", "snap_abcdefghij0123456789", "é"])
    assert.throws(() => checkSnapshotName(bad), InvalidArgumentError, bad);
  // Only the exact id shape is reserved.
  assert.equal(checkSnapshotName("snap_short"), "snap_short");
});

it("unsigned and unverified snapshots are refused with clear messages", () => {
  assert.equal(isUnsigned({ kid: "k", signature: null }), true);
  assert.equal(isUnsigned({ kid: "k", signature: new Uint8Array() }), true);
  assert.equal(isUnsigned({ kid: null, signature: new Uint8Array(64) }), true);
  assert.equal(isUnsigned({ kid: "0123456789abcdef", signature: new Uint8Array(64) }), false);
  const u = unsignedError("snap_x");
  assert.ok(u instanceof SnapshotRefusedError);
  assert.equal(u.message, "snapshot snap_x is unsigned; refusing to restore");
  assert.equal(
    verificationError("snap_x", "retired key", "0123456789abcdef").message,
    "snapshot snap_x failed verification: retired key (kid 0123456789abcdef)",
  );
});

it("error codes are snake_case names", () => {
  assert.equal(codeSnakeName(Code.ResourceExhausted), "resource_exhausted");
  assert.equal(codeSnakeName(Code.FailedPrecondition), "failed_precondition");
  assert.equal(codeSnakeName(Code.Unavailable), "unavailable");
  assert.equal(codeSnakeName(Code.NotFound), "not_found");
});
