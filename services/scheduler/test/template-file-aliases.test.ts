import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { Client } from "@connectrpc/connect";
import { Code } from "@connectrpc/connect";
import { createServiceClient, type Db } from "@dnah/platform";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { createScheduler, type Scheduler } from "../src/index.js";
import { connectError, logger, migratedDb, testConfig } from "./helpers.js";

/**
 * A client's own names for uploaded build contexts (E2B's filesHash): PutTemplateFiles with an
 * owner and alias, HasTemplateFiles by them answering the sha256. Per owner, so one key's name
 * never resolves to another key's upload.
 */
describe("template file aliases (scheduler, real Postgres)", () => {
  let db: Db;
  let drop: () => Promise<void>;
  let scheduler: Scheduler;
  let client: Client<typeof SchedulerService>;

  before(async () => {
    ({ db, drop } = await migratedDb("postgres"));
    scheduler = createScheduler(testConfig(), { db, logger });
    client = createServiceClient(SchedulerService, await scheduler.start());
  });
  after(async () => {
    await scheduler?.close();
    await drop?.();
  });

  const tar = (s: string) => {
    const data = Buffer.from(s);
    return { data, sha256: createHash("sha256").update(data).digest("hex") };
  };

  it("names an upload per owner; another owner's same name is not it", async () => {
    const alias = randomBytes(32).toString("hex");
    const a = tar("key A's files");
    assert.equal((await client.hasTemplateFiles({ owner: "key-a", alias })).present, false);
    await client.putTemplateFiles({ ...a, owner: "key-a", alias });
    const mine = await client.hasTemplateFiles({ owner: "key-a", alias });
    assert.equal(mine.present, true);
    assert.equal(mine.sha256, a.sha256);
    const theirs = await client.hasTemplateFiles({ owner: "key-b", alias });
    assert.equal(theirs.present, false);
    // Key B uploading other bytes under the same name changes only its own.
    const b = tar("key B's files");
    await client.putTemplateFiles({ ...b, owner: "key-b", alias });
    assert.equal((await client.hasTemplateFiles({ owner: "key-b", alias })).sha256, b.sha256);
    assert.equal((await client.hasTemplateFiles({ owner: "key-a", alias })).sha256, a.sha256);
    // By sha256 as before.
    assert.equal((await client.hasTemplateFiles({ sha256: a.sha256 })).present, true);
  });

  it("refuses half an alias, or both ways at once", async () => {
    const a = tar("x");
    await assert.rejects(client.putTemplateFiles({ ...a, alias: "n" }), connectError(Code.InvalidArgument));
    await assert.rejects(client.hasTemplateFiles({ owner: "k" }), connectError(Code.InvalidArgument));
    await assert.rejects(
      client.hasTemplateFiles({ sha256: a.sha256, owner: "k", alias: "n" }),
      connectError(Code.InvalidArgument),
    );
  });
});
