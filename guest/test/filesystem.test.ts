import assert from "node:assert/strict";
import { chmod, mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { EventType, FileType } from "@dnah/proto/filesystem/filesystem_pb";
import { eventually, sleep, startGuest, type TestGuest } from "./helpers.js";

let g: TestGuest;
before(async () => {
  g = await startGuest();
});
after(() => g.close());

async function codeOf(p: Promise<unknown>): Promise<Code> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err).code;
  }
  assert.fail("expected an error");
}

for (const binary of [false, true]) {
  describe(`filesystem (${binary ? "binary" : "json"})`, () => {
    test("Stat: EntryInfo fields for a file, a directory and a symlink", async () => {
      const fs = g.fs(binary);
      const dir = join(g.dir, `stat-${binary}`);
      await mkdir(dir);
      await chmod(dir, 0o755);
      const file = join(dir, "a.txt");
      await writeFile(file, "12345");
      await chmod(file, 0o644);
      await symlink(file, join(dir, "link"));

      const f = (await fs.stat({ path: file })).entry;
      assert.equal(f?.name, "a.txt");
      assert.equal(f?.type, FileType.FILE);
      assert.equal(f?.path, file);
      assert.equal(f?.size, 5n);
      assert.equal(f?.mode, 0o644);
      assert.equal(f?.permissions, "-rw-r--r--");
      assert.equal(f?.owner, g.user);
      assert.ok(f?.group);
      assert.ok(f?.modifiedTime && Math.abs(Number(f.modifiedTime.seconds) * 1000 - Date.now()) < 60_000);
      assert.equal(f?.symlinkTarget, undefined);

      const d = (await fs.stat({ path: dir })).entry;
      assert.equal(d?.type, FileType.DIRECTORY);
      assert.equal(d?.permissions, "drwxr-xr-x");
      assert.equal(d?.mode, 0o755);

      const l = (await fs.stat({ path: join(dir, "link") })).entry;
      assert.equal(l?.type, FileType.FILE);
      assert.equal(l?.symlinkTarget, file);
      assert.equal(l?.permissions, "Lrwxrwxrwx");
      assert.equal(l?.mode, 0o644);

      assert.equal(await codeOf(fs.stat({ path: join(dir, "missing") })), Code.NotFound);
    });
  });
}

describe("filesystem", () => {
  test("relative paths and ~ resolve under home", async () => {
    const fs = g.fs();
    const home = (await fs.stat({ path: "~" })).entry?.path;
    assert.ok(home);
    assert.equal((await fs.stat({ path: "" })).entry?.path, home);
    const rel = `dnah-guest-test-${process.pid}`;
    try {
      const made = await fs.makeDir({ path: rel });
      assert.equal(made.entry?.path, join(home, rel));
      assert.equal((await fs.stat({ path: `~/${rel}` })).entry?.type, FileType.DIRECTORY);
    } finally {
      await fs.remove({ path: rel });
    }
  });

  test("MakeDir: creates parents; existing dir → already_exists; existing file → invalid_argument", async () => {
    const fs = g.fs();
    const deep = join(g.dir, "mk", "a", "b");
    const made = await fs.makeDir({ path: deep });
    assert.equal(made.entry?.type, FileType.DIRECTORY);
    assert.equal(made.entry?.name, "b");
    assert.equal(await codeOf(fs.makeDir({ path: deep })), Code.AlreadyExists);
    await writeFile(join(g.dir, "mk", "file"), "x");
    assert.equal(await codeOf(fs.makeDir({ path: join(g.dir, "mk", "file") })), Code.InvalidArgument);
  });

  test("ListDir: depth 1 and 2, paths under the requested path, symlinked root followed; errors", async () => {
    const fs = g.fs();
    const root = join(g.dir, "ls");
    await mkdir(join(root, "sub", "deeper"), { recursive: true });
    await writeFile(join(root, "b.txt"), "b");
    await writeFile(join(root, "a.txt"), "a");
    await writeFile(join(root, "sub", "c.txt"), "c");
    await writeFile(join(root, "sub", "deeper", "d.txt"), "d");
    await symlink(root, join(g.dir, "ls-link"));

    const one = await fs.listDir({ path: root, depth: 1 });
    assert.deepEqual(
      one.entries.map((e) => e.name),
      ["a.txt", "b.txt", "sub"],
    );
    const zero = await fs.listDir({ path: root });
    assert.equal(zero.entries.length, 3);
    const two = await fs.listDir({ path: join(g.dir, "ls-link"), depth: 2 });
    assert.deepEqual(
      two.entries.map((e) => e.path),
      ["a.txt", "b.txt", "sub", "sub/c.txt", "sub/deeper"].map((p) => join(g.dir, "ls-link", p)),
    );
    assert.equal(await codeOf(fs.listDir({ path: join(root, "nope") })), Code.NotFound);
    assert.equal(await codeOf(fs.listDir({ path: join(root, "a.txt") })), Code.InvalidArgument);
  });

  test("Move: renames, creates destination parents; missing source → not_found", async () => {
    const fs = g.fs();
    const src = join(g.dir, "mv-src.txt");
    await writeFile(src, "moved");
    const dst = join(g.dir, "mv", "deep", "renamed.txt");
    const moved = await fs.move({ source: src, destination: dst });
    assert.equal(moved.entry?.path, dst);
    assert.equal(moved.entry?.name, "renamed.txt");
    assert.equal(await readFile(dst, "utf8"), "moved");
    assert.equal(await codeOf(fs.move({ source: src, destination: dst })), Code.NotFound);
  });

  test("Remove: files and trees; a missing path is fine", async () => {
    const fs = g.fs();
    const tree = join(g.dir, "rm");
    await mkdir(join(tree, "x", "y"), { recursive: true });
    await writeFile(join(tree, "x", "y", "f"), "f");
    await fs.remove({ path: tree });
    assert.equal(await codeOf(fs.stat({ path: tree })), Code.NotFound);
    await fs.remove({ path: tree });
  });

  test("WatchDir: start first, then create/write/remove with relative names; recursive", async () => {
    const fs = g.fs(false, { "Keepalive-Ping-Interval": "1" });
    const dir = join(g.dir, "watch");
    await mkdir(join(dir, "nested"), { recursive: true });
    const ac = new AbortController();
    const seen: { name: string; type: EventType; hasEntry: boolean }[] = [];
    const kinds: string[] = [];
    const done = (async () => {
      try {
        for await (const msg of fs.watchDir(
          { path: dir, recursive: true, includeEntry: true },
          { signal: ac.signal, timeoutMs: 20_000 },
        )) {
          kinds.push(msg.event.case ?? "");
          if (msg.event.case === "filesystem") {
            seen.push({
              name: msg.event.value.name,
              type: msg.event.value.type,
              hasEntry: !!msg.event.value.entry,
            });
          }
        }
      } catch {
        // aborted below
      }
    })();
    await eventually(() => (kinds[0] === "start" ? true : undefined));
    await writeFile(join(dir, "a.txt"), "1");
    await sleep(50);
    await writeFile(join(dir, "a.txt"), "22", { flag: "a" });
    await writeFile(join(dir, "nested", "deep.txt"), "x");
    await sleep(50);
    const { rm } = await import("node:fs/promises");
    await rm(join(dir, "a.txt"));
    await eventually(() =>
      seen.some((e) => e.name === "a.txt" && e.type === EventType.REMOVE) &&
      seen.some((e) => e.name === "nested/deep.txt" && e.type === EventType.CREATE)
        ? true
        : undefined,
    );
    await sleep(1200);
    ac.abort();
    await done;
    assert.equal(kinds[0], "start");
    assert.ok(kinds.includes("keepalive"), kinds.join(","));
    const create = seen.find((e) => e.name === "a.txt" && e.type === EventType.CREATE);
    assert.ok(create?.hasEntry, JSON.stringify(seen));
    assert.ok(
      seen.some((e) => e.name === "a.txt" && e.type === EventType.WRITE),
      JSON.stringify(seen),
    );
    assert.ok(!seen.find((e) => e.type === EventType.REMOVE)?.hasEntry);
  });

  test("WatchDir errors: missing → not_found, file → invalid_argument", async () => {
    const fs = g.fs();
    const consume = async (path: string) => {
      for await (const _ of fs.watchDir({ path })) break;
    };
    assert.equal(await codeOf(consume(join(g.dir, "nothing-here"))), Code.NotFound);
    await writeFile(join(g.dir, "plain"), "x");
    assert.equal(await codeOf(consume(join(g.dir, "plain"))), Code.InvalidArgument);
  });

  test("polled watcher: CreateWatcher / GetWatcherEvents / RemoveWatcher", async () => {
    const fs = g.fs(true);
    const dir = join(g.dir, "polled");
    await mkdir(dir);
    const { watcherId } = await fs.createWatcher({ path: dir });
    await writeFile(join(dir, "p.txt"), "x");
    const events = await eventually(async () => {
      const r = await fs.getWatcherEvents({ watcherId });
      return r.events.length > 0 ? r.events : undefined;
    });
    assert.equal(events[0]?.name, "p.txt");
    assert.equal(events[0]?.type, EventType.CREATE);
    await fs.removeWatcher({ watcherId });
    assert.equal(await codeOf(fs.getWatcherEvents({ watcherId })), Code.NotFound);
  });
});
