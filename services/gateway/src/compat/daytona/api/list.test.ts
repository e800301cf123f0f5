import assert from "node:assert/strict";
import { test } from "node:test";
import { InvalidArgumentError } from "../../../errors.js";
import { intParam } from "../body.js";
import { decodeCursor, encodeCursor, parseListQuery } from "./list.js";

const OWNER = "c".repeat(64);

test("list query: labels JSON, repeated states, paging and order", () => {
  const f = parseListQuery(
    `/api/sandbox?limit=1&labels=${encodeURIComponent('{"a":"b","c":"d"}')}&states=started&states=stopped&order=asc`,
    OWNER,
  );
  assert.deepEqual(f.labels, { a: "b", c: "d" });
  assert.deepEqual(f.states, ["started", "stopped"]);
  assert.equal(f.limit, 1);
  assert.equal(f.order, "asc");
  assert.equal(f.after, undefined);
  assert.equal(parseListQuery("/api/sandbox", OWNER).limit, 100);
});

test("list query: bad or unsupported input is a 400, never ignored", () => {
  for (const q of [
    "labels=not-json",
    'labels={"a":1}',
    "limit=0",
    "limit=201",
    "states=bogus",
    "minCpu=2",
    "sort=name",
    "order=up",
    "cursor=xyz",
    "createdAtAfter=yesterday",
    "limit=1&limit=2",
  ]) {
    assert.throws(() => parseListQuery(`/api/sandbox?${q}`, OWNER), InvalidArgumentError, q);
  }
});

test("cursor round-trips to the millisecond", () => {
  const d = new Date("2026-01-02T03:04:05.678Z");
  assert.deepEqual(decodeCursor(encodeCursor(d, "id-1")), { createdAt: d, id: "id-1" });
});

test("interval path params: negative integers parse, junk does not", () => {
  assert.equal(intParam("-1", "interval", -10, 10), -1);
  assert.equal(intParam("0", "interval", -10, 10), 0);
  for (const bad of ["1.5", "abc", "", "11", "1e3"])
    assert.throws(() => intParam(bad, "interval", -10, 10), InvalidArgumentError);
});
