import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isConnectionError } from "../src/db.js";

/** What pg and pg-pool throw when Postgres is away, against what a wrong query throws. */
describe("isConnectionError: the database is away, not the query wrong", () => {
  test("socket errors, connection SQLSTATEs and pg's own messages count", () => {
    const away = [
      Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }),
      Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }),
      Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" }),
      Object.assign(new Error("the database system is starting up"), { code: "57P03" }),
      Object.assign(new Error("connection failure"), { code: "08006" }),
      new Error("Connection terminated unexpectedly"),
      new Error("Client has encountered a connection error and is not queryable"),
    ];
    for (const e of away) assert.equal(isConnectionError(e), true, e.message);
  });

  test("query errors and non-errors do not", () => {
    const wrong = [
      Object.assign(new Error('relation "x" does not exist'), { code: "42P01" }),
      Object.assign(new Error("duplicate key value violates unique constraint"), { code: "23505" }),
      Object.assign(new Error("canceling statement due to statement timeout"), { code: "57014" }),
      new Error("something else"),
      undefined,
      "ECONNREFUSED",
    ];
    for (const e of wrong) assert.equal(isConnectionError(e), false, String(e));
  });
});
