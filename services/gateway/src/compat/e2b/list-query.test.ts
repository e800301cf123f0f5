import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { getSignature } from "e2b";
import { InvalidArgumentError } from "../../errors.js";
import { AccessTokens } from "./access-token.js";
import { decodeCursor, encodeCursor, type Listable, pageOf, parseListQuery } from "./list-query.js";
import { fileSignature, parseSignedFileRequest, SignedFileRouter } from "./signed-files.js";

const at = (ms: number) => new Date(ms);

describe("E2B list paging (pure)", () => {
  const items: Listable[] = [
    { sandboxId: "a", templateId: "base", startedAt: at(1000), state: "running" },
    { sandboxId: "b", templateId: "base", startedAt: at(2000), state: "paused" },
    { sandboxId: "c", templateId: "other", startedAt: at(2000), state: "running" },
    { sandboxId: "d", templateId: "base", startedAt: at(3000), state: "running" },
  ];

  test("keyset pages in both orders cover every item once, ties broken by id", () => {
    for (const order of ["asc", "desc"] as const) {
      const seen: string[] = [];
      let token: string | undefined;
      for (let i = 0; i < 10; i++) {
        const q = parseListQuery(`/v2/sandboxes?limit=1&order=${order}${token ? `&nextToken=${token}` : ""}`);
        const { page, nextToken, totalRunning } = pageOf(items, q);
        assert.equal(totalRunning, 3);
        seen.push(...page.map((p) => p.sandboxId));
        token = nextToken;
        if (token === undefined) break;
      }
      assert.deepEqual(seen, order === "asc" ? ["a", "b", "c", "d"] : ["d", "c", "b", "a"]);
    }
  });

  test("filters: state, template, startedAfter; the last page has no token", () => {
    const q = parseListQuery(
      `/v2/sandboxes?state=running&template=base&startedAfter=${encodeURIComponent(at(1500).toISOString())}`,
    );
    const { page, nextToken } = pageOf(items, q);
    assert.deepEqual(
      page.map((p) => p.sandboxId),
      ["d"],
    );
    assert.equal(nextToken, undefined);
  });

  test("metadata double encoding (spec §5.2) and bad input", () => {
    const q = parseListQuery("/v2/sandboxes?metadata=a%252520b%3Dc%252526d%25253De&state=running,paused");
    assert.deepEqual(q.metadata, { "a b": "c&d=e" });
    assert.deepEqual([...q.states], ["running", "paused"]);
    for (const bad of [
      "limit=0",
      "state=gone",
      "nextToken=%%%",
      "nextToken=bm9wZQ",
      "order=x",
      "limit=1&limit=2",
    ]) {
      assert.throws(() => parseListQuery(`/v2/sandboxes?${bad}`), InvalidArgumentError, bad);
    }
    assert.deepEqual(decodeCursor(encodeCursor({ startedAtMs: 5, sandboxId: "abc" })), {
      startedAtMs: 5,
      sandboxId: "abc",
    });
  });
});

describe("signed /files routing (pure)", () => {
  const tokens = AccessTokens.fromSecret(Buffer.alloc(32, 7));

  test("our signature equals the SDK's getSignature", async () => {
    const token = tokens.tokenFor("sbx1");
    for (const [user, exp] of [
      [undefined, undefined],
      ["root", 60],
    ] as const) {
      const sdk = await getSignature({
        path: "/tmp/x y.txt",
        operation: "read",
        user,
        envdAccessToken: token,
        ...(exp !== undefined ? { expirationInSeconds: exp } : {}),
      });
      const ours = fileSignature(
        {
          path: "/tmp/x y.txt",
          operation: "read",
          username: user ?? "",
          expiration: sdk.expiration === null ? undefined : String(sdk.expiration),
        },
        token,
      );
      assert.equal(ours, sdk.signature);
    }
  });

  test("only GET/POST /files with a v1 signature is routed by signature", () => {
    assert.equal(parseSignedFileRequest("/files?path=/a", "GET"), undefined);
    assert.equal(parseSignedFileRequest("/health?signature=v1_x", "GET"), undefined);
    assert.equal(parseSignedFileRequest("/files?signature=v1_x", "DELETE"), undefined);
    assert.deepEqual(
      parseSignedFileRequest("/files?path=%2Fa&signature=v1_x&signature_expiration=9", "POST"),
      {
        path: "/a",
        operation: "write",
        username: "",
        expiration: "9",
        signature: "v1_x",
      },
    );
  });

  test("the router finds the sandbox whose token reproduces the signature, and re-reads on a miss", async () => {
    let ids = ["one", "two"];
    let reads = 0;
    let now = 0;
    const router = new SignedFileRouter({
      tokens,
      candidates: async () => {
        reads++;
        return ids;
      },
      now: () => now,
    });
    const req = (id: string) => {
      const r = { path: "/p", operation: "read" as const, username: "", expiration: undefined };
      return { ...r, signature: fileSignature(r, tokens.tokenFor(id)) };
    };
    assert.equal(await router.sandboxFor(req("two")), "two");
    assert.equal(await router.sandboxFor(req("one")), "one");
    assert.equal(reads, 1, "cached");
    // A sandbox created right after the read: the miss waits out the 100 ms window, then one
    // read serves every concurrent miss.
    ids = ["one", "two", "three"];
    const [a, b] = await Promise.all([router.sandboxFor(req("three")), router.sandboxFor(req("three"))]);
    assert.deepEqual([a, b, reads], ["three", "three", 2]);
    now = 150;
    assert.equal(await router.sandboxFor({ ...req("one"), signature: "v1_tampered" }), undefined);
    assert.equal(reads, 3, "a miss after the window reads again");
  });
});
