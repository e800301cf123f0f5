import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { isDiskFull, toConnectError } from "../src/domain/errors.js";

describe("a full host disk is ResourceExhausted, not Internal", () => {
  test("ENOSPC / EDQUOT anywhere in the cause chain, or a tool saying so", () => {
    const enospc = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
    assert.equal(isDiskFull(enospc), true);
    assert.equal(isDiskFull(new Error("snapshot failed", { cause: enospc })), true);
    assert.equal(isDiskFull(Object.assign(new Error("quota"), { code: "EDQUOT" })), true);
    const mkfs = Object.assign(new Error("Command failed: mkfs.ext4"), {
      code: 1,
      stderr: "mkfs.ext4: No space left on device while writing out and closing file system\n",
    });
    assert.equal(isDiskFull(mkfs), true);
    const ce = toConnectError(new Error("write failed", { cause: enospc }));
    assert.equal(ce.code, Code.ResourceExhausted);
    assert.equal(ce.rawMessage, "the host's disk is full");
  });

  test("other failures stay what they were", () => {
    assert.equal(isDiskFull(Object.assign(new Error("EIO"), { code: "EIO" })), false);
    assert.equal(
      isDiskFull(Object.assign(new Error("tar"), { code: 2, stderr: "tar: bad header\n" })),
      false,
    );
    assert.equal(isDiskFull(undefined), false);
    assert.equal(toConnectError(new Error("boom")).code, Code.Internal);
  });
});
