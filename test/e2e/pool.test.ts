import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { eventually, startTestStack, type TestStack } from "./harness.js";

describe("warm pool", () => {
  let s: TestStack;
  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "4" });
  });
  after(async () => {
    await s?.close();
  });

  test("20 concurrent creates get 20 distinct, working sandboxes; the pool refills", async () => {
    const pooledCount = async () =>
      Number(
        (
          await s.db.query<{ n: string }>(
            "SELECT count(*) AS n FROM sandboxes WHERE pooled AND state = 'running'",
          )
        ).rows[0]?.n,
      );
    await eventually(async () => (await pooledCount()) === 4);
    const created = await Promise.all(
      Array.from({ length: 20 }, () =>
        s.json<{ sandboxId: string }>("/v1/sandboxes", { method: "POST", body: "{}" }).then((r) => {
          assert.equal(r.status, 201, JSON.stringify(r.body));
          return r.body.sandboxId;
        }),
      ),
    );
    assert.equal(new Set(created).size, 20, "a sandbox was handed out twice");
    // Every one is a live, separate sandbox.
    const marks = await Promise.all(
      created.map(async (id) => {
        const w = await s.json(`/v1/sandboxes/${id}/exec`, {
          method: "POST",
          body: JSON.stringify({ command: `echo ${id} > /tmp/mark; cat /tmp/mark` }),
        });
        return (w.body as { stdout: string }).stdout.trim();
      }),
    );
    assert.deepEqual(marks, created);
    await eventually(async () => (await pooledCount()) === 4);
    await Promise.all(created.map((id) => s.api(`/v1/sandboxes/${id}`, { method: "DELETE" })));
  });
});
