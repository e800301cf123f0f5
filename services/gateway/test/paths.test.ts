import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../src/errors.js";
import { MAX_PATH_BYTES, resolveSandboxPath, SANDBOX_HOME } from "../src/sandbox/paths.js";

const rejects = (input: string, message: RegExp) =>
  assert.throws(
    () => resolveSandboxPath(input),
    (err) =>
      err instanceof InvalidArgumentError && err.kind === "invalid_argument" && message.test(err.message),
  );

describe("resolveSandboxPath", () => {
  it("keeps absolute paths, normalised", () => {
    assert.equal(resolveSandboxPath("/etc/passwd"), "/etc/passwd");
    assert.equal(resolveSandboxPath("/"), "/");
    assert.equal(resolveSandboxPath("//a///b/./c/"), "/a/b/c");
    assert.equal(resolveSandboxPath("/a/b/../c"), "/a/c");
    assert.equal(resolveSandboxPath("/a/.."), "/");
  });

  it("resolves relative paths and ~ against the home", () => {
    assert.equal(SANDBOX_HOME, "/home/user");
    assert.equal(resolveSandboxPath("notes.txt"), "/home/user/notes.txt");
    assert.equal(resolveSandboxPath("./dir/x"), "/home/user/dir/x");
    assert.equal(resolveSandboxPath("~"), "/home/user");
    assert.equal(resolveSandboxPath("~/a/b"), "/home/user/a/b");
    assert.equal(resolveSandboxPath("."), "/home/user");
    assert.equal(resolveSandboxPath("x", "/root"), "/root/x");
  });

  it("allows climbing out of the home while staying under /", () => {
    assert.equal(resolveSandboxPath("../../etc/passwd"), "/etc/passwd");
    assert.equal(resolveSandboxPath(".."), "/home");
    assert.equal(resolveSandboxPath("../.."), "/");
  });

  it("refuses paths whose segments climb above /", () => {
    rejects("/..", /escapes the sandbox root/);
    rejects("/../etc", /escapes the sandbox root/);
    rejects("/../../x", /escapes the sandbox root/);
    rejects("/a/../../x", /escapes the sandbox root/);
    rejects("../../../x", /escapes the sandbox root/);
    rejects("~/../../../x", /escapes the sandbox root/);
  });

  it("refuses empty paths, NUL bytes and paths over 4096 bytes", () => {
    rejects("", /must not be empty/);
    rejects("/tmp/a\0b", /NUL/);
    rejects(`/${"a".repeat(MAX_PATH_BYTES)}`, /longer than 4096 bytes/);
    // The limit counts UTF-8 bytes, not characters: 2 bytes each.
    rejects(`/${"é".repeat(2048)}`, /longer than 4096 bytes/);
    assert.equal(resolveSandboxPath(`/${"a".repeat(MAX_PATH_BYTES - 1)}`).length, MAX_PATH_BYTES);
  });

  it("treats odd but legal names as names", () => {
    assert.equal(resolveSandboxPath("/a/..."), "/a/...");
    assert.equal(resolveSandboxPath("/a/..b"), "/a/..b");
    assert.equal(resolveSandboxPath("~user"), "/home/user/~user");
    assert.equal(resolveSandboxPath("/with space/ü"), "/with space/ü");
  });
});
