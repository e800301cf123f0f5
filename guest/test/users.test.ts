import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { collect, startGuest, type TestGuest } from "./helpers.js";

// Switching users needs root; the suite runs as root on the build machine.
const isRoot = process.getuid?.() === 0;
let g: TestGuest;
let fixtures = "";
let home = "";

before(async () => {
  if (!isRoot) return;
  fixtures = await mkdtemp(join(tmpdir(), "dnah-guest-users-"));
  home = join(fixtures, "home", "tester");
  await mkdir(home, { recursive: true });
  const passwd = join(fixtures, "passwd");
  const group = join(fixtures, "group");
  await writeFile(passwd, `root:x:0:0:root:/root:/bin/bash\ntester:x:4242:4242::${home}:/bin/bash\n`);
  await writeFile(group, "root:x:0:\ntester:x:4242:\nextra:x:4343:tester,other\n");
  await chmod(fixtures, 0o755);
  g = await startGuest({ passwdPath: passwd, groupPath: group }, { defaultUser: "tester" });
});
after(async () => {
  await g?.close();
  if (fixtures) await rm(fixtures, { recursive: true, force: true });
});

test("as root, processes run as the requested user with uid, gid, supplementary groups, HOME", {
  skip: !isRoot,
}, async () => {
  const r = await collect(
    g.process().start({
      process: { cmd: "/bin/sh", args: ["-c", 'id -u; id -g; id -G; echo "$HOME $USER"; pwd'] },
      stdin: false,
    }),
  );
  const [uid, gid, groups, env, pwd] = r.stdout.trim().split("\n");
  assert.equal(uid, "4242");
  assert.equal(gid, "4242");
  assert.deepEqual(groups?.split(" ").sort(), ["4242", "4343"]);
  assert.equal(env, `${home} tester`);
  assert.equal(pwd, home);
});

test("as root, files made for a user are owned by that user", { skip: !isRoot }, async () => {
  const fs = g.fs();
  const made = await fs.makeDir({ path: "a/b" });
  assert.equal(made.entry?.path, join(home, "a", "b"));
  const st = await stat(join(home, "a"));
  assert.equal(st.uid, 4242);
  assert.equal(made.entry?.owner, "tester");
  const up = await g.http("POST", "/files?path=up/file.txt", {
    headers: { "content-type": "application/octet-stream" },
    body: "mine",
  });
  assert.equal(up.status, 200);
  assert.equal((await stat(join(home, "up", "file.txt"))).uid, 4242);
  assert.equal((await stat(join(home, "up"))).gid, 4242);
  const asRoot = `Basic ${Buffer.from("root:").toString("base64")}`;
  const r = await collect(
    g.process(false, { Authorization: asRoot }).start({ process: { cmd: "id", args: ["-u"] }, stdin: false }),
  );
  assert.equal(r.stdout.trim(), "0");
});

test("as root, a PTY runs as the requested user too", { skip: !isRoot }, async () => {
  const r = await collect(
    g.process().start({
      process: { cmd: "/bin/sh", args: ["-c", "id -u; id -G"] },
      pty: { size: { cols: 80, rows: 24 } },
    }),
  );
  assert.equal(r.end?.exitCode, 0);
  assert.match(r.pty, /^4242\r\n4242 4343\r\n/);
});
