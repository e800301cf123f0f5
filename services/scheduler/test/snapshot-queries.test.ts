import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  beginSnapshotDelete,
  deleteSnapshotRow,
  findSnapshot,
  insertSandbox,
  insertSnapshot,
  listSnapshots,
  markSnapshotReady,
  type NewSnapshot,
  upsertHost,
} from "../src/db/queries.js";
import { newSandboxId, newSnapshotId } from "../src/domain/ids.js";
import { type DbKind, migratedDb } from "./helpers.js";

/** The snapshot queries on both databases: pg and PGlite differ in how int8 and bytea come back. */
for (const kind of ["postgres", "pglite"] as DbKind[]) {
  describe(`snapshot queries (${kind})`, () => {
    it("insert, name uniqueness, ready with signature, find, list, delete", async () => {
      const { db, drop } = await migratedDb(kind);
      try {
        await upsertHost(db, { hostId: "h1", vmmUrl: "http://127.0.0.1:1", runtime: "jail", capacity: 4 });
        const sandboxId = newSandboxId();
        const base: Omit<NewSnapshot, "id" | "name"> = {
          sandboxId,
          templateId: "base",
          hostId: "h1",
          runtime: "jail",
          cpuCount: 1,
          memoryMib: 512,
          metadata: { a: "b" },
        };
        const a = await insertSnapshot(db, { ...base, id: newSnapshotId(), name: "named" });
        assert.ok(a);
        assert.equal(a.state, "creating");
        assert.equal(a.vmmUrl, "http://127.0.0.1:1");
        assert.equal(a.signature, null);
        assert.ok(a.createdAtMs > 1_600_000_000_000n);
        assert.equal(await insertSnapshot(db, { ...base, id: newSnapshotId(), name: "named" }), undefined);
        // Unnamed snapshots never collide.
        assert.ok(await insertSnapshot(db, { ...base, id: newSnapshotId(), name: undefined }));
        assert.ok(await insertSnapshot(db, { ...base, id: newSnapshotId(), name: undefined }));

        const big = 5n * 2n ** 40n + 7n;
        const signature = new Uint8Array(64).map((_, i) => i);
        const ready = await markSnapshotReady(db, a.id, {
          runtime: "jail",
          memory: false,
          manifestSha256: "ab".repeat(32),
          sizeBytes: big,
          files: [{ name: "disk.tar", sizeBytes: big, sha256: "cd".repeat(32) }],
          cpuCount: 2,
          memoryMib: 0,
          kid: "0123456789abcdef",
          signature,
        });
        assert.equal(ready.state, "ready");
        assert.equal(ready.sizeBytes, big);
        assert.deepEqual(ready.files, [{ name: "disk.tar", sizeBytes: big, sha256: "cd".repeat(32) }]);
        assert.equal(ready.cpuCount, 2);
        assert.equal(ready.memoryMib, 512, "0 keeps the recorded value");
        assert.deepEqual(ready.signature, signature);
        assert.equal(ready.createdAtMs, a.createdAtMs);

        const byName = await findSnapshot(db, "named", 60_000);
        assert.equal(byName?.id, a.id);
        assert.equal(byName?.hostLive, true);
        assert.deepEqual(byName?.signature, signature);
        assert.equal((await findSnapshot(db, a.id, 60_000))?.id, a.id);
        assert.equal(await findSnapshot(db, "nope", 60_000), undefined);

        // Only ready ones are listed.
        assert.deepEqual(
          (await listSnapshots(db, sandboxId)).map((s) => s.id),
          [a.id],
        );
        assert.deepEqual(await listSnapshots(db, "other"), []);

        const deleting = await beginSnapshotDelete(db, a.id);
        assert.equal(deleting?.state, "deleting");
        assert.equal(deleting?.name, null, "the name is released at once");
        assert.deepEqual(await listSnapshots(db, undefined), []);
        assert.ok(await insertSnapshot(db, { ...base, id: newSnapshotId(), name: "named" }));
        await deleteSnapshotRow(db, a.id);
        assert.equal(await findSnapshot(db, a.id, 60_000), undefined);

        const sb = await insertSandbox(db, {
          ...base,
          id: newSandboxId(),
          pooled: false,
          envVars: {},
          sourceSnapshotId: a.id,
        });
        assert.equal(sb.sourceSnapshotId, a.id);
      } finally {
        await drop();
      }
    });
  });
}
