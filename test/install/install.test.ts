import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, readdir, readFile, readlink, rmdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import pg from "pg";
import { artifacts, type Chroot, debianRoot, freshChroot, INSTALL_SH, REPO } from "./fixture.js";

const run = promisify(execFile);
const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const log = (line: string) => console.log(`# ${line}`);

/** Path, type, mode, size, mtime and link target of everything under dir (the run's changes). */
async function manifest(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const r = join(rel, name);
      const st = await lstat(join(dir, r));
      const kind = st.isSymbolicLink()
        ? `-> ${await readlink(join(dir, r))}`
        : st.isDirectory()
          ? "dir"
          : "file";
      out.push(`${r} ${kind} ${st.mode.toString(8)} ${st.isDirectory() ? "" : `${st.size} ${st.mtimeMs}`}`);
      if (st.isDirectory()) await walk(r);
    }
  };
  await walk(".");
  return out;
}

describe("scripts/install.sh", () => {
  test("is shellcheck-clean", async () => {
    const r = await run("shellcheck", [INSTALL_SH]).catch(
      (err: NodeJS.ErrnoException & { stdout?: string }) => {
        if (err.code === "ENOENT") throw new Error("shellcheck is not installed: run scripts/setup-host.sh");
        return { stdout: err.stdout ?? String(err) };
      },
    );
    assert.equal(r.stdout, "");
  });

  describe("in a fresh Debian 12 root (debootstrap), downloads from a local folder", () => {
    const suffix = randomBytes(4).toString("hex");
    const schema = `install_${suffix}`;
    const token = `join_${randomBytes(24).toString("hex")}`;
    const hostId = `install-${suffix}`;
    const cgroupParent = `dnah-install-${suffix}`;
    const schedulerPort = 20_000 + randomInt(0, 20_000);
    const vmmPort = schedulerPort + 1;
    const control = `http://127.0.0.1:${schedulerPort}`;
    const args = [
      "--control-url",
      control,
      "--join-token",
      token,
      "--host-id",
      hostId,
      "--listen",
      `127.0.0.1:${vmmPort}`,
      "--skip-kvm-check",
      "--set",
      `DNAH_CGROUP_PARENT=${cgroupParent}`,
    ];
    // The test machine's disk may be small; the check itself is exercised with this bound.
    const env = { DNAH_MIN_DISK_GIB: "1" };
    let chroot: Chroot;
    let scheduler: ChildProcess;
    let db: pg.Client;

    before(async () => {
      const t0 = Date.now();
      const nodeVersion = /^NODE_VERSION=(\S+)$/m.exec(await readFile(INSTALL_SH, "utf8"))?.[1];
      assert.ok(nodeVersion, "install.sh pins NODE_VERSION");
      const root = await debianRoot(log);
      const downloads = await artifacts(nodeVersion, log);
      chroot = await freshChroot(root, downloads, `/tmp/dnah-install-${suffix}`);
      log(`root and downloads ready in ${Date.now() - t0} ms`);
      scheduler = spawn(process.execPath, ["--import", "tsx", "services/scheduler/src/main.ts"], {
        cwd: REPO,
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          DATABASE_URL,
          DNAH_DB_SCHEMA: schema,
          DNAH_SCHEDULER_PORT: String(schedulerPort),
          DNAH_POOL_SIZE: "0",
          DNAH_JOIN_TOKEN: token,
          DNAH_LOG_LEVEL: "warn",
        },
        stdio: ["ignore", "ignore", "inherit"],
      });
      for (let i = 0; ; i++) {
        if (
          await fetch(`${control}/`).then(
            () => true,
            () => false,
          )
        )
          break;
        if (i > 600) throw new Error("the scheduler did not start");
        await new Promise((r) => setTimeout(r, 100));
      }
      db = new pg.Client({ connectionString: DATABASE_URL });
      await db.connect();
    });

    after(async () => {
      if (scheduler && scheduler.exitCode === null && scheduler.signalCode === null) {
        const exited = new Promise((r) => scheduler.once("exit", r));
        scheduler.kill("SIGTERM");
        await exited;
      }
      await db?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await db?.end();
      // The vmm ran in the chroot but against this machine's cgroup tree (/sys is shared).
      for (const ctl of await readdir("/sys/fs/cgroup").catch(() => [] as string[])) {
        const dir = join("/sys/fs/cgroup", ctl, cgroupParent);
        if (existsSync(dir)) await rmdir(dir).catch(() => {});
      }
      await chroot?.remove();
    });

    const upper = (p: string) => join(chroot.upper, p);

    test("preflight lists what is missing, exits 1 and installs nothing", async () => {
      const r = await chroot.install(args, { DNAH_MIN_DISK_GIB: "1000000" });
      assert.equal(r.code, 1, r.output);
      assert.match(
        r.output,
        /this host is not ready:\n {2}- disk: only \d+ MiB free under \/opt, need 1000000 GiB/,
      );
      assert.doesNotMatch(r.output, /==> packages/);
      assert.equal(existsSync(upper("opt/dnah")), false);
    });

    test("installs Node, the CH binaries, kernel and image, links dnah, writes the env file and the unit", async () => {
      const t0 = Date.now();
      const r = await chroot.install(args, env);
      log(`first install: ${Date.now() - t0} ms`);
      assert.equal(r.code, 0, r.output);
      // No systemd in a chroot: the unit is written and nothing is started.
      assert.match(r.output, /systemd is not running here/);
      assert.match(r.output, /warning: KVM: not checked \(--skip-kvm-check\)/);

      const envFile = await readFile(upper("etc/dnah/vmm.env"), "utf8");
      assert.equal((await stat(upper("etc/dnah/vmm.env"))).mode & 0o777, 0o600);
      const settings = Object.fromEntries(
        envFile
          .split("\n")
          .filter((l) => l && !l.startsWith("#"))
          .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
      );
      assert.deepEqual(settings, {
        DNAH_SCHEDULER_URL: control,
        DNAH_JOIN_TOKEN: token,
        DNAH_HOST_ID: hostId,
        DNAH_VMM_HOST: "127.0.0.1",
        DNAH_VMM_PORT: String(vmmPort),
        DNAH_VMM_ADVERTISE_URL: `http://127.0.0.1:${vmmPort}`,
        DNAH_RUNTIME: "jail",
        DNAH_CH_BIN: "/opt/dnah/bin/cloud-hypervisor",
        DNAH_STATE_DIR: "/var/lib/dnah",
        DNAH_CACHE_DIR: "/var/cache/dnah",
        PATH: "/opt/dnah/node/bin:/opt/dnah/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        DNAH_CGROUP_PARENT: cgroupParent,
      });

      const unit = await readFile(upper("etc/systemd/system/dnah-vmm.service"), "utf8");
      assert.equal((await stat(upper("etc/systemd/system/dnah-vmm.service"))).mode & 0o777, 0o644);
      for (const line of [
        "After=network-online.target",
        "Wants=network-online.target",
        "EnvironmentFile=/etc/dnah/vmm.env",
        "WorkingDirectory=/opt/dnah/app",
        "ExecStart=/opt/dnah/node/bin/node --import tsx services/vmm/src/main.ts",
        "Restart=always",
        "WantedBy=multi-user.target",
      ])
        assert.ok(unit.split("\n").includes(line), `unit lacks ${line}:\n${unit}`);

      assert.equal(await readlink(upper("opt/dnah/app")), REPO);
      assert.ok(existsSync(upper("opt/dnah/node/bin/node")));
      assert.ok(existsSync(upper("opt/dnah/node/DNAH-TEST-REPACK")));
      assert.match(await readFile(upper("opt/dnah/bin/cloud-hypervisor"), "utf8"), /STAND-IN/);
      assert.match(
        r.output,
        /cloud-hypervisor: installed at \/opt\/dnah\/bin\/cloud-hypervisor \(cloud-hypervisor v53\.0/,
      );
      assert.match(r.output, /ch-remote: installed at \/opt\/dnah\/bin\/ch-remote \(ch-remote v53\.0/);
      assert.match(r.output, /using the sha256 from \/mnt\/dnah-downloads\/SHA256SUMS/);
      assert.ok((await readdir(upper("var/cache/dnah/kernels"))).length > 0);
      assert.ok(existsSync(upper("var/cache/dnah/images/base/PLACEHOLDER")));
    });

    test("running it again changes nothing", async () => {
      const before = await manifest(chroot.upper);
      const r = await chroot.install(args, env);
      assert.equal(r.code, 0, r.output);
      for (const said of [
        "Node.js: already installed",
        "cloud-hypervisor: already installed",
        "ch-remote: already installed",
        "guest kernel: already installed",
        "base image: already installed",
        "already linked",
        "env file: unchanged",
        "systemd unit: unchanged",
      ])
        assert.ok(r.output.includes(said), `no '${said}' in:\n${r.output}`);
      assert.deepEqual(await manifest(chroot.upper), before);
    });

    test("--foreground starts the vmm, which registers with the scheduler on this machine", async () => {
      const t0 = Date.now();
      const { child, output } = chroot.spawnInstall([...args, "--foreground"], env);
      let startedAt = 0;
      let row: { id: string; vmm_url: string } | undefined;
      try {
        while (!row) {
          if (child.exitCode !== null) throw new Error(`install.sh exited (${child.exitCode}):\n${output()}`);
          if (Date.now() - t0 > 120_000) throw new Error(`no registration within 120 s:\n${output()}`);
          if (!startedAt && output().includes("starting the vmm in the foreground")) startedAt = Date.now();
          const q = await db.query<{ id: string; vmm_url: string }>(
            `SELECT id, vmm_url FROM ${schema}.hosts WHERE id = $1`,
            [hostId],
          );
          row = q.rows[0];
          if (!row) await new Promise((r) => setTimeout(r, 50));
        }
        const registeredAt = Date.now();
        log(
          `vmm in the chroot registered ${registeredAt - (startedAt || t0)} ms after install.sh started it ` +
            `(${registeredAt - t0} ms after install.sh --foreground began)`,
        );
        assert.deepEqual(row, { id: hostId, vmm_url: `http://127.0.0.1:${vmmPort}` });
        for (let i = 0; !output().includes(`registered as ${hostId}`); i++) {
          if (i > 200) throw new Error(`install.sh did not report the registration:\n${output()}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        // The vmm keeps running in the foreground after the registration.
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(child.exitCode, null, `install.sh --foreground stopped:\n${output()}`);
      } finally {
        if (child.exitCode === null && child.signalCode === null && child.pid) {
          const exited = new Promise((r) => child.once("exit", r));
          process.kill(-child.pid, "SIGTERM");
          await exited;
        }
      }
    });

    test("--uninstall removes what it installed and keeps state; --purge removes state and cache", async () => {
      const r = await chroot.install(["--uninstall"], env);
      assert.equal(r.code, 0, r.output);
      for (const p of ["etc/systemd/system/dnah-vmm.service", "etc/dnah/vmm.env", "etc/dnah", "opt/dnah"])
        assert.equal(existsSync(upper(p)), false, `${p} is still there`);
      assert.ok(existsSync(join(REPO, "services/vmm/src/main.ts")), "the linked checkout is untouched");
      assert.ok(existsSync(upper("var/lib/dnah")), "state is kept without --purge");
      assert.ok(existsSync(upper("var/cache/dnah/kernels")));
      const again = await chroot.install(["--uninstall", "--purge"], env);
      assert.equal(again.code, 0, again.output);
      assert.equal(existsSync(upper("var/lib/dnah")), false);
      assert.equal(existsSync(upper("var/cache/dnah")), false);
    });
  });
});
