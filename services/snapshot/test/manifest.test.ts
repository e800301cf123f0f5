import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../src/domain/errors.js";
import { type ManifestFields, manifestSigningBytes, validateManifest } from "../src/domain/manifest.js";

const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");

const FIXED: ManifestFields = {
  sandboxId: "sb-1",
  snapshotId: "snap-1",
  manifestSha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  sizeBytes: 1_048_576n,
  createdAtMs: 1_700_000_000_000n,
};

const KID = "0123456789abcdef";

// Computed independently (Python struct.pack, spelled out field by field below); if this
// changes, every signature ever issued stops verifying.
const GOLDEN = [
  "646e61682e736e617073686f742e6d616e69666573742e763100", // "dnah.snapshot.manifest.v1\0"
  "00000004" + "73622d31", // sandbox_id "sb-1"
  "00000006" + "736e61702d31", // snapshot_id "snap-1"
  "00000040" +
    "65336230633434323938666331633134396166626634633839393666623932343237" +
    "616534316534363439623933346361343935393931623738353262383535", // manifest_sha256
  "0000000000100000", // size_bytes 1048576
  "0000018bcfe56800", // created_at_ms 1700000000000
  "00000010" + "30313233343536373839616263646566", // kid "0123456789abcdef"
].join("");

describe("manifestSigningBytes", () => {
  it("matches the golden encoding", () => {
    assert.equal(toHex(manifestSigningBytes(FIXED, KID)), GOLDEN);
  });

  it("lays the fields out as documented, the kid last", () => {
    const bytes = manifestSigningBytes(FIXED, KID);
    // 26 prefix + (4+4) + (4+6) + (4+64) + 8 + 8 + (4+16)
    assert.equal(bytes.length, 148);
    assert.equal(Buffer.from(bytes.subarray(0, 26)).toString("latin1"), "dnah.snapshot.manifest.v1\0");
    const tail = bytes.subarray(26 + 8 + 10 + 68);
    assert.equal(toHex(tail.subarray(0, 8)), "0000000000100000");
    assert.equal(toHex(tail.subarray(8, 16)), "0000018bcfe56800");
    assert.equal(toHex(tail.subarray(16, 20)), "00000010");
    assert.equal(Buffer.from(tail.subarray(20)).toString("utf8"), KID);
  });

  it("changes when the kid changes", () => {
    assert.notEqual(toHex(manifestSigningBytes(FIXED, "0123456789abcdee")), GOLDEN);
  });

  for (const kid of ["", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "../0123456789ab"]) {
    it(`refuses the kid ${JSON.stringify(kid)}`, () => {
      assert.throws(() => manifestSigningBytes(FIXED, kid), /kid must be 16 lower-case hex/);
    });
  }

  it("is stable across calls and object key order", () => {
    const reordered: ManifestFields = {
      createdAtMs: FIXED.createdAtMs,
      sizeBytes: FIXED.sizeBytes,
      manifestSha256: FIXED.manifestSha256,
      snapshotId: FIXED.snapshotId,
      sandboxId: FIXED.sandboxId,
    };
    assert.equal(toHex(manifestSigningBytes(reordered, KID)), GOLDEN);
    assert.equal(toHex(manifestSigningBytes({ ...FIXED }, KID)), GOLDEN);
  });

  const changes: [string, Partial<ManifestFields>][] = [
    ["sandboxId", { sandboxId: "sb-2" }],
    ["snapshotId", { snapshotId: "snap-2" }],
    ["manifestSha256", { manifestSha256: `${FIXED.manifestSha256.slice(0, 63)}4` }],
    ["sizeBytes", { sizeBytes: FIXED.sizeBytes + 1n }],
    ["createdAtMs", { createdAtMs: FIXED.createdAtMs + 1n }],
  ];
  for (const [field, change] of changes) {
    it(`changes when ${field} changes`, () => {
      assert.notEqual(toHex(manifestSigningBytes({ ...FIXED, ...change }, KID)), GOLDEN);
    });
  }

  it("keeps field boundaries unambiguous", () => {
    const a = manifestSigningBytes({ ...FIXED, sandboxId: "ab", snapshotId: "c" }, KID);
    const b = manifestSigningBytes({ ...FIXED, sandboxId: "a", snapshotId: "bc" }, KID);
    assert.notEqual(toHex(a), toHex(b));
  });

  it("encodes non-ASCII ids as UTF-8 with byte lengths", () => {
    const bytes = manifestSigningBytes({ ...FIXED, sandboxId: "é" }, KID);
    const at = "dnah.snapshot.manifest.v1\0".length;
    assert.equal(toHex(bytes.subarray(at, at + 6)), "00000002c3a9");
  });

  it("encodes the full u64 range", () => {
    const max = (1n << 64n) - 1n;
    const bytes = manifestSigningBytes({ ...FIXED, sizeBytes: max, createdAtMs: 0n }, KID);
    assert.equal(toHex(bytes.subarray(-36, -20)), "ffffffffffffffff0000000000000000");
  });

  it("refuses to encode an invalid manifest", () => {
    assert.throws(() => manifestSigningBytes({ ...FIXED, sandboxId: "" }, KID), InvalidArgumentError);
  });
});

describe("validateManifest", () => {
  it("accepts a valid manifest", () => {
    validateManifest(FIXED);
  });

  it("lists every problem at once", () => {
    const err = (() => {
      try {
        validateManifest({ ...FIXED, sandboxId: "", snapshotId: "", manifestSha256: "ABC", sizeBytes: -1n });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    assert.ok(err instanceof InvalidArgumentError);
    assert.equal(err.problems.length, 4);
  });

  const bad: [string, Partial<ManifestFields>][] = [
    ["empty sandbox_id", { sandboxId: "" }],
    ["empty snapshot_id", { snapshotId: "" }],
    ["upper-case sha256", { manifestSha256: FIXED.manifestSha256.toUpperCase() }],
    ["short sha256", { manifestSha256: FIXED.manifestSha256.slice(1) }],
    ["non-hex sha256", { manifestSha256: `${FIXED.manifestSha256.slice(1)}g` }],
    ["lone surrogate in an id", { snapshotId: "snap-\ud800" }],
    ["size above u64", { sizeBytes: 1n << 64n }],
    ["negative time", { createdAtMs: -1n }],
  ];
  for (const [what, change] of bad) {
    it(`rejects ${what}`, () => {
      assert.throws(() => validateManifest({ ...FIXED, ...change }), InvalidArgumentError);
    });
  }

  it("rejects a missing manifest", () => {
    assert.throws(() => validateManifest(undefined), /manifest is required/);
  });
});
