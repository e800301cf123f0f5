import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  Daytona,
  type DaytonaError,
  DaytonaFileNotFoundError,
  DaytonaNotFoundError,
  type Sandbox,
} from "@daytonaio/sdk";
import { startTestStack, type TestStack } from "./harness.js";

/** 64 KiB with every byte value, NULs included. */
function binary(): Buffer {
  const b = Buffer.alloc(64 * 1024);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7) & 0xff;
  b[0] = 0x00;
  b[1] = 0x01;
  b[2] = 0x02;
  return b;
}

/** The Daytona toolbox's file system, driven by the real SDK 0.218.0. */
describe("daytona SDK 0.218.0 toolbox: files", () => {
  let s: TestStack;
  let daytona: Daytona;
  let sbx: Sandbox;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    daytona = new Daytona({ apiKey: s.key, apiUrl: `${s.url}/api` });
    sbx = await daytona.create();
  });
  after(async () => {
    await sbx?.delete().catch(() => {});
    await daytona?.[Symbol.asyncDispose]();
    await s?.close();
  });

  test("upload and download: binary 64 KiB, nested parents, visible to processes", async () => {
    const data = binary();
    await sbx.fs.uploadFile(data, "up/deep/er/bin.dat");
    await sbx.fs.uploadFiles([
      { source: Buffer.from("hello text\n"), destination: "/tmp/t1/a.txt" },
      { source: Buffer.from("second"), destination: "rel/b.txt" },
    ]);
    const back = await sbx.fs.downloadFile("up/deep/er/bin.dat");
    assert.equal(back.length, data.length);
    assert.ok(back.equals(data), "binary round trip");
    assert.equal((await sbx.fs.downloadFile("/tmp/t1/a.txt")).toString(), "hello text\n");
    // Relative paths resolve where exec starts: the user's home.
    const seen = await sbx.process.executeCommand("cat rel/b.txt; sha256sum up/deep/er/bin.dat | cut -c1-16");
    const { createHash } = await import("node:crypto");
    assert.equal(seen.result, `second${createHash("sha256").update(data).digest("hex").slice(0, 16)}\n`);
    const abs = await sbx.fs.downloadFile("/home/user/rel/b.txt");
    assert.equal(abs.toString(), "second");
  });

  test("bulk download: a missing path is an error part; a single missing file throws DaytonaFileNotFoundError", async () => {
    await sbx.fs.uploadFile(Buffer.from("x1"), "bulk/x1.txt");
    const res = await sbx.fs.downloadFiles([
      { source: "bulk/x1.txt" },
      { source: "bulk/missing.txt" },
      { source: "bulk" },
    ]);
    assert.equal(res.length, 3);
    assert.equal(res[0]?.result?.toString(), "x1");
    assert.equal(res[0]?.error, undefined);
    assert.ok(res[1]?.error, "missing path has an error");
    assert.equal(res[1]?.errorDetails?.statusCode, 404);
    assert.ok(res[2]?.error, "a directory is an error");
    await assert.rejects(
      sbx.fs.downloadFile("bulk/missing.txt"),
      (e: unknown) => e instanceof DaytonaFileNotFoundError,
    );
  });

  test("createFolder, list, info, move (old path then 404), chmod, delete", async () => {
    await sbx.fs.createFolder("work/a/b", "750");
    await sbx.fs.uploadFile(Buffer.from("12345"), "work/f.txt");
    const list = await sbx.fs.listFiles("work");
    const names = list.map((f) => f.name).sort();
    assert.deepEqual(names, ["a", "f.txt"]);
    const dir = list.find((f) => f.name === "a");
    assert.equal(dir?.isDir, true);
    const info = await sbx.fs.getFileDetails("work/f.txt");
    assert.equal(info.size, 5);
    assert.equal(info.isDir, false);
    assert.equal(info.name, "f.txt");
    assert.equal((await sbx.fs.getFileDetails("work/a/b")).permissions, "0750");
    await assert.rejects(
      sbx.fs.getFileDetails("work/none"),
      (e: unknown) => e instanceof DaytonaNotFoundError,
    );

    await sbx.fs.moveFiles("work/f.txt", "work/a/g.txt");
    await assert.rejects(
      sbx.fs.getFileDetails("work/f.txt"),
      (e: unknown) => e instanceof DaytonaNotFoundError,
    );
    assert.equal((await sbx.fs.downloadFile("work/a/g.txt")).toString(), "12345");
    await assert.rejects(
      sbx.fs.moveFiles("work/a/g.txt", "work/a/b"),
      (e: unknown) => (e as DaytonaError).statusCode === 409,
    );

    await sbx.fs.setFilePermissions("work/a/g.txt", { mode: "600" });
    const g = await sbx.fs.getFileDetails("work/a/g.txt");
    assert.equal(g.permissions, "0600");
    assert.equal(g.mode, "-rw-------");
    await sbx.fs.setFilePermissions("work/a/g.txt", { owner: "root", group: "root" });
    assert.equal((await sbx.fs.getFileDetails("work/a/g.txt")).owner, "root");

    await assert.rejects(sbx.fs.deleteFile("work/a"), (e: unknown) => (e as DaytonaError).statusCode === 400);
    await sbx.fs.deleteFile("work/a", true);
    await assert.rejects(sbx.fs.getFileDetails("work/a"), (e: unknown) => e instanceof DaytonaNotFoundError);
    await sbx.fs.uploadFile(Buffer.from("z"), "work/z.txt");
    await sbx.fs.deleteFile("work/z.txt");
    await assert.rejects(sbx.fs.deleteFile("work/z.txt"), (e: unknown) => e instanceof DaytonaNotFoundError);
    await sbx.fs.deleteFile("work", true);
    assert.ok(!(await sbx.fs.listFiles(".")).some((f) => f.name === "work"));
  });

  test("find (line numbers, binaries skipped), search (glob on names), replace", async () => {
    await sbx.fs.uploadFiles([
      { source: Buffer.from("one\nTODO: first\nthree\n"), destination: "proj/src/a.ts" },
      { source: Buffer.from("TODO: second\n"), destination: "proj/src/sub/b.ts" },
      { source: Buffer.from("no marker\n"), destination: "proj/readme.md" },
      {
        source: Buffer.concat([Buffer.from([0, 1, 2]), Buffer.from("TODO: bin")]),
        destination: "proj/blob.bin",
      },
    ]);
    const found = await sbx.fs.findFiles("proj", "TODO:");
    const rows = found.map((m) => `${m.file}:${m.line}:${m.content}`).sort();
    assert.deepEqual(rows, [
      "/home/user/proj/src/a.ts:2:TODO: first",
      "/home/user/proj/src/sub/b.ts:1:TODO: second",
    ]);

    const searched = await sbx.fs.searchFiles("proj", "*.ts");
    assert.deepEqual([...searched.files].sort(), [
      "/home/user/proj/src/a.ts",
      "/home/user/proj/src/sub/b.ts",
    ]);
    assert.deepEqual((await sbx.fs.searchFiles("proj", "*.nothing")).files, []);

    const replaced = await sbx.fs.replaceInFiles(
      ["proj/src/a.ts", "proj/src/sub/b.ts", "proj/none.ts"],
      "TODO:",
      "DONE:",
    );
    assert.deepEqual(
      replaced.map((r) => [r.file, r.success]),
      [
        ["proj/src/a.ts", true],
        ["proj/src/sub/b.ts", true],
        ["proj/none.ts", false],
      ],
    );
    assert.equal((await sbx.fs.downloadFile("proj/src/a.ts")).toString(), "one\nDONE: first\nthree\n");
    assert.deepEqual(await sbx.fs.findFiles("proj/src", "TODO:"), []);
  });
});
