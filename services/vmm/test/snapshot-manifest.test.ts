import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  buildManifest,
  checkSignedListing,
  compareFiles,
  ManifestFormatError,
  parseManifest,
  sha256Hex,
} from "../src/snapshot/manifest.js";

const ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; // sha256("abc"), FIPS 180-2
const EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; // sha256("")
/**
 * The golden listing, and its digest computed once outside this code:
 *   printf 'dnah.snapshot.files.v1\nba78…15ad 3 abc.txt\ne3b0…b855 0 empty\n' | sha256sum
 */
const GOLDEN = `dnah.snapshot.files.v1\n${ABC} 3 abc.txt\n${EMPTY} 0 empty\n`;
const GOLDEN_SHA256 = "83fb962a76039d630061b07044bc2af26375f11579b88c3ea3fb387b87c8ca63";

const files = [
  { name: "empty", size: 0, sha256: EMPTY },
  { name: "abc.txt", size: 3, sha256: ABC },
];

describe("snapshot MANIFEST format", () => {
  test("known answer: the bytes and their sha256", () => {
    const bytes = buildManifest(files);
    assert.equal(bytes.toString("utf8"), GOLDEN);
    assert.equal(sha256Hex(bytes), GOLDEN_SHA256);
    assert.equal(sha256Hex(Buffer.from("abc")), ABC);
    assert.deepEqual(parseManifest(bytes), [files[1], files[0]]);
  });

  test("names sort by byte order (upper case before lower, '-' before digits)", () => {
    const e = (name: string) => ({ name, size: 1, sha256: ABC });
    const text = buildManifest([e("b"), e("a"), e("B"), e("a-1"), e("a0")]).toString();
    assert.deepEqual(
      text
        .trim()
        .split("\n")
        .slice(1)
        .map((l) => l.split(" ")[2]),
      ["B", "a", "a-1", "a0", "b"],
    );
  });

  test("build refuses what could not be parsed back", () => {
    for (const bad of [
      [{ name: "../x", size: 1, sha256: ABC }],
      [{ name: ".hidden", size: 1, sha256: ABC }],
      [{ name: "MANIFEST", size: 1, sha256: ABC }],
      [{ name: "a", size: -1, sha256: ABC }],
      [{ name: "a", size: 1.5, sha256: ABC }],
      [{ name: "a", size: 1, sha256: ABC.toUpperCase() }],
      [
        { name: "a", size: 1, sha256: ABC },
        { name: "a", size: 1, sha256: ABC },
      ],
    ])
      assert.throws(() => buildManifest(bad), ManifestFormatError, JSON.stringify(bad));
  });

  test("parse is strict: one byte form per listing", () => {
    const line = (sha: string, size: string, name: string) => `${sha} ${size} ${name}\n`;
    const head = "dnah.snapshot.files.v1\n";
    const cases: Array<[string, RegExp]> = [
      ["", /newline/],
      ["dnah.snapshot.files.v2\n", /does not start with/],
      [GOLDEN.slice(0, -1), /newline/],
      [`${GOLDEN}\n`, /expected/],
      [head + line(ABC, "03", "a"), /invalid size/],
      [head + line(ABC, "+3", "a"), /invalid size/],
      [head + line(ABC, "3", "a b"), /expected/],
      [`${head}${ABC}  3 a\n`, /expected/],
      [head + line(ABC.slice(1), "3", "a"), /sha256/],
      [head + line(ABC.toUpperCase(), "3", "a"), /sha256/],
      [head + line(ABC, "3", "sub/a"), /invalid file name/],
      [head + line(ABC, "3", "b") + line(ABC, "3", "a"), /out of order/],
      [head + line(ABC, "3", "a") + line(ABC, "3", "a"), /listed twice/],
      [`${head.replace("\n", "\r\n")}`, /printable ASCII|does not start/],
      [head + line(ABC, "3", "é"), /printable ASCII/],
    ];
    for (const [text, re] of cases)
      assert.throws(() => parseManifest(Buffer.from(text)), re, JSON.stringify(text));
    assert.throws(() => parseManifest(Buffer.alloc(1024 * 1024 + 1, 0x61)), /larger than/);
    // A header alone is an empty listing.
    assert.deepEqual(parseManifest(Buffer.from(head)), []);
  });

  test("the listing must hash to the signed digest and sum to the signed size", () => {
    const bytes = Buffer.from(GOLDEN);
    assert.deepEqual(checkSignedListing(bytes, GOLDEN_SHA256, 3n).problems, []);
    assert.deepEqual(checkSignedListing(bytes, EMPTY, 3n).problems, [
      "MANIFEST does not match the signed digest",
    ]);
    assert.deepEqual(checkSignedListing(bytes, GOLDEN_SHA256, 4).problems, [
      "MANIFEST lists 3 bytes, signed 4",
    ]);
  });

  test("compareFiles names each fault precisely", () => {
    const listed = [
      { name: "disk.tar", size: 10, sha256: ABC },
      { name: "memory.bin", size: 10, sha256: ABC },
      { name: "share.tar", size: 40, sha256: ABC },
      { name: "state.bin", size: 5, sha256: ABC },
    ];
    assert.deepEqual(
      compareFiles(listed, [
        { name: "memory.bin", size: 10, sha256: EMPTY },
        { name: "share.tar", size: 12 },
        { name: "state.bin", size: 6 },
        { name: "extra.bin", size: 1 },
      ]),
      [
        "disk.tar: missing",
        "extra.bin: not in the signed listing",
        "memory.bin: changed (sha256 differs)",
        "share.tar: truncated (12 bytes, signed 40)",
        "state.bin: grown (6 bytes, signed 5)",
      ],
    );
    assert.deepEqual(
      compareFiles(
        listed,
        listed.map((l) => ({ ...l })),
      ),
      [],
    );
  });
});
