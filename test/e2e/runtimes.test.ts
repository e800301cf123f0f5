/**
 * One end-to-end suite, run once per runtime: the jail, and real microVMs under qemu (TCG on
 * hosts without KVM). The same test bodies drive the gateway's native REST API only:
 * create → exec → files → the share at /mnt/dnah-share both ways → an in-memory counter →
 * pause → resume (the counter continues) → signed snapshot → restore → fork (clones diverge,
 * own entropy and hostname) → a tampered snapshot refused → delete, with nothing left behind. The only runtime call is `shareDir`, to find the share's host side.
 * A host without qemu or its image fails the qemu half, saying what is missing; it never skips.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { release } from "node:os";
import { after, before, describe, test } from "node:test";
import { prepareQemu } from "../../services/vmm/test/qemu-helpers.js";
import { eventually, startTestStack, type TestStack } from "./harness.js";

interface SandboxJson {
  sandboxId: string;
  templateId: string;
  state: string;
  pausedAt: string | null;
}
interface ExecJson {
  exitCode: number;
  stdout: string;
  stderr: string;
}
interface ErrorJson {
  code: string;
  message: string;
}
interface SnapshotJson {
  snapshotId: string;
  sandboxId: string;
  memory: boolean;
  restoreSemantics: string;
  sizeBytes: number | string;
  manifestSha256: string;
  kid: string;
  files: Array<{ name: string; sizeBytes: number | string; sha256: string }>;
}
interface ForkJson {
  results: Array<{ sandbox?: SandboxJson; error?: string; code?: string }>;
}
interface ListJson {
  entries: Array<{ name: string; type: string; sizeBytes: number | string }>;
}

/** A call that should answer promptly gives up after this (a failure, not a bound). */
const CALL_MS = 60_000;
/** Creating a sandbox boots it: a TCG microVM on a loaded 2-core machine takes tens of seconds. */
const CREATE_MS = 150_000;
const SHARE = "/mnt/dnah-share";
const CGROUP_ROOTS = [
  "/sys/fs/cgroup",
  "/sys/fs/cgroup/freezer",
  "/sys/fs/cgroup/memory",
  "/sys/fs/cgroup/pids",
  "/sys/fs/cgroup/cpuacct",
];

/** The kernel release the sandbox should report: the host's for the jail, the image's for qemu. */
async function prepare(runtime: "jail" | "qemu"): Promise<string> {
  if (runtime === "jail") return release();
  const prep = await prepareQemu();
  if ("skip" in prep)
    throw new Error(
      `the qemu runtime cannot run on this host: ${prep.skip}. Install qemu-system-x86, virtiofsd and ` +
        "vhost-device-vsock (scripts/setup-host.sh) and build the image (scripts/prepare.sh: `dnah image build base`).",
    );
  return prep.kernelRelease;
}

function cgroupDirs(s: TestStack, id: string): string[] {
  return CGROUP_ROOTS.map((root) => `${root}/${s.cgroupParent}/${id}`);
}

function cgroupPids(s: TestStack, id: string): number[] {
  const pids = new Set<number>();
  for (const d of cgroupDirs(s, id)) {
    try {
      for (const p of readFileSync(`${d}/cgroup.procs`, "utf8").split("\n").filter(Boolean))
        pids.add(Number(p));
    } catch {
      // controller not mounted here
    }
  }
  return [...pids];
}

/** Host processes that name the sandbox: its jail's agent, or its VM's qemu and helpers. */
function processesOf(s: TestStack, id: string): number[] {
  const dir = `${s.stateDir}/sandboxes/${id}`;
  const found: number[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const env = readFileSync(`/proc/${pid}/environ`, "latin1");
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "latin1");
      if (env.includes(`DNAH_SANDBOX_ID=${id}\0`) || cmd.includes(dir)) found.push(Number(pid));
    } catch (err) {
      if (!["ENOENT", "ESRCH", "EACCES"].includes((err as NodeJS.ErrnoException).code ?? "")) throw err;
    }
  }
  return found;
}

/** "<pid> <count>" as the counting loop writes it. */
function readCounter(text: string): { pid: number; count: number } | undefined {
  const m = /^(\d+) (\d+)$/.exec(text.trim());
  return m ? { pid: Number(m[1]), count: Number(m[2]) } : undefined;
}

for (const runtime of ["jail", "qemu"] as const) {
  describe(`${runtime}: create → exec → files → share → pause → resume → delete over REST`, () => {
    let s: TestStack | undefined;
    let id = "";
    let kernelRelease = "";
    const suite = `runtimes-${runtime}-${randomBytes(4).toString("hex")}`;
    const blob = randomBytes(64 * 1024);
    const stack = () => {
      assert.ok(s, "the stack did not start");
      return s;
    };
    const exec = (command: string, extra: Record<string, unknown> = {}) =>
      stack().json<ExecJson & ErrorJson>(`/v1/sandboxes/${id}/exec`, {
        method: "POST",
        body: JSON.stringify({ command, ...extra }),
        signal: AbortSignal.timeout(CALL_MS),
      });
    const ok = async (command: string, extra: Record<string, unknown> = {}) => {
      const r = await exec(command, extra);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.exitCode, 0, `${command}: ${r.body.stderr}`);
      return r.body.stdout;
    };
    let counter: { pid: number; count: number } | undefined;
    let snap = {} as SnapshotJson;
    const clones: string[] = [];
    const okIn = async (sid: string, command: string) => {
      const r = await stack().json<ExecJson & ErrorJson>(`/v1/sandboxes/${sid}/exec`, {
        method: "POST",
        body: JSON.stringify({ command }),
        signal: AbortSignal.timeout(CALL_MS),
      });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.exitCode, 0, `${command}: ${r.body.stderr}`);
      return r.body.stdout;
    };
    const post = (path: string) =>
      stack().json<SandboxJson & ErrorJson>(path, { method: "POST", signal: AbortSignal.timeout(CALL_MS) });

    before(
      async () => {
        kernelRelease = await prepare(runtime);
        s = await startTestStack({
          DNAH_RUNTIME: runtime,
          DNAH_POOL_SIZE: "0",
          DNAH_VM_BOOT_TIMEOUT_MS: String(CREATE_MS),
          DNAH_VM_EGRESS: "false",
          // TCG unless told otherwise: see QEMU_ACCEL in services/vmm/test/qemu-helpers.ts.
          DNAH_QEMU_ACCEL: process.env.DNAH_QEMU_ACCEL ?? "tcg",
        });
        assert.equal(s.runtime, runtime);
      },
      { timeout: 900_000 },
    );
    after(async () => {
      for (const c of clones)
        await s
          ?.api(`/v1/sandboxes/${c}`, { method: "DELETE", signal: AbortSignal.timeout(CALL_MS) })
          .catch(() => {});
      if (s && id) {
        await s
          .api(`/v1/sandboxes/${id}`, { method: "DELETE", signal: AbortSignal.timeout(CALL_MS) })
          .catch((err: Error) =>
            process.stderr.write(`runtimes.test: delete ${id} failed: ${err.message}\n`),
          );
      }
      await s?.close();
    });

    test("create boots a sandbox of the template", { timeout: CREATE_MS + 30_000 }, async () => {
      const r = await stack().json<SandboxJson>("/v1/sandboxes", {
        method: "POST",
        body: JSON.stringify({ metadata: { suite }, envVars: { GLOBAL_VAR: "from-create" } }),
        signal: AbortSignal.timeout(CREATE_MS),
      });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.templateId, "base");
      assert.equal(r.body.state, "running");
      id = r.body.sandboxId;
      const list = await stack().json<{ sandboxes: SandboxJson[] }>(`/v1/sandboxes?metadata.suite=${suite}`);
      assert.deepEqual(
        list.body.sandboxes.map((x) => x.sandboxId),
        [id],
      );
    });

    test("exec: output, exit codes, env, the runtime's own kernel", { timeout: 120_000 }, async () => {
      const hello = await exec("echo hello");
      assert.equal(hello.status, 200, JSON.stringify(hello.body));
      assert.deepEqual(
        { exitCode: hello.body.exitCode, stdout: hello.body.stdout, stderr: hello.body.stderr },
        { exitCode: 0, stdout: "hello\n", stderr: "" },
      );
      const failed = await exec("echo oops >&2; exit 3");
      assert.equal(failed.body.exitCode, 3);
      assert.equal(failed.body.stderr, "oops\n");
      assert.equal(
        await ok('echo "$GLOBAL_VAR $CALL_VAR $(whoami)"', { envs: { CALL_VAR: "per-call" } }),
        "from-create per-call user\n",
      );
      // The jail shares the host's kernel; a microVM runs its image's own.
      assert.equal(await ok("uname -r"), `${kernelRelease}\n`);
    });

    test("files: binary-safe write and read back, list, seen by exec", { timeout: 120_000 }, async () => {
      const put = await stack().api(`/v1/sandboxes/${id}/files?path=/home/user/data/blob.bin`, {
        method: "PUT",
        headers: { "content-type": "application/octet-stream" },
        body: blob,
        signal: AbortSignal.timeout(CALL_MS),
      });
      assert.equal(put.status, 200, await put.clone().text());
      const got = await stack().api(`/v1/sandboxes/${id}/files?path=/home/user/data/blob.bin`, {
        signal: AbortSignal.timeout(CALL_MS),
      });
      assert.equal(got.status, 200);
      assert.ok(Buffer.from(await got.arrayBuffer()).equals(blob), "read back differs");
      const list = await stack().json<ListJson>(`/v1/sandboxes/${id}/files/list?path=/home/user/data`);
      assert.equal(list.status, 200, JSON.stringify(list.body));
      assert.deepEqual(
        list.body.entries.map((e) => [e.name, e.type, Number(e.sizeBytes)]),
        [["blob.bin", "file", blob.length]],
      );
      const sum = await ok("sha256sum /home/user/data/blob.bin | cut -d' ' -f1");
      assert.equal(sum.trim(), createHash("sha256").update(blob).digest("hex"));
      const missing = await stack().json<ErrorJson>(`/v1/sandboxes/${id}/files?path=/home/user/nope`);
      assert.equal(missing.status, 404, JSON.stringify(missing.body));
    });

    test(`the share: the host folder is ${SHARE} in the sandbox, both ways`, {
      timeout: 120_000,
    }, async () => {
      const host = stack().shareDir(id);
      assert.ok(existsSync(host), `no share folder on the host at ${host}`);
      assert.match(await ok(`grep -c ' ${SHARE} ' /proc/mounts`), /^[1-9]/, `${SHARE} is not a mount`);
      const fromHost = randomBytes(4096);
      writeFileSync(`${host}/from-host.bin`, fromHost);
      const read = await stack().api(`/v1/sandboxes/${id}/files?path=${SHARE}/from-host.bin`, {
        signal: AbortSignal.timeout(CALL_MS),
      });
      assert.equal(read.status, 200);
      assert.ok(Buffer.from(await read.arrayBuffer()).equals(fromHost), "the guest read other bytes");
      // Written by the sandbox's unprivileged default user.
      const token = randomBytes(8).toString("hex");
      await ok(`printf %s ${token} > ${SHARE}/from-guest.txt && sync`);
      assert.equal(readFileSync(`${host}/from-guest.txt`, "utf8"), token);
    });

    test("a process holding its state in memory runs", { timeout: 120_000 }, async () => {
      // The loop's count lives only in the shell's memory; the file just shows it.
      await ok(
        "setsid sh -c 'i=0; while :; do i=$((i+1)); echo \"$$ $i\" > /tmp/counter; sleep 0.1; done' </dev/null >/dev/null 2>&1 &",
      );
      const first = await eventually(async () =>
        readCounter(await ok("cat /tmp/counter 2>/dev/null || true")),
      );
      const later = await eventually(async () => {
        const c = readCounter(await ok("cat /tmp/counter"));
        return c && c.count > first.count ? c : undefined;
      });
      assert.equal(later.pid, first.pid);
      counter = later;
    });

    let pausedUploadSha = "";
    test("pause: the sandbox refuses exec with 409 failed_precondition", { timeout: 120_000 }, async () => {
      const paused = await post(`/v1/sandboxes/${id}/pause`);
      assert.equal(paused.status, 200, JSON.stringify(paused.body));
      assert.equal(paused.body.state, "paused");
      assert.equal((await stack().json<SandboxJson>(`/v1/sandboxes/${id}`)).body.state, "paused");
      const refused = await exec("echo hi");
      assert.equal(refused.status, 409, JSON.stringify(refused.body));
      assert.equal(refused.body.code, "failed_precondition");
      // The host side of the share stays usable while the sandbox is paused.
      writeFileSync(`${stack().shareDir(id)}/while-paused.txt`, "written while paused");
      // And the files plane writes it through the gateway (streamed, checksum checked).
      const body = randomBytes(3 * 1024 * 1024);
      const sha = createHash("sha256").update(body).digest("hex");
      const up = await stack().api(`/v1/sandboxes/${id}/share/uploads/while-paused.bin?sha256=${sha}`, {
        method: "PUT",
        headers: { "content-type": "application/octet-stream" },
        body,
      });
      assert.equal(up.status, 200, await up.text());
      pausedUploadSha = sha;
    });

    test("resume: exec works again and earlier files are still there", { timeout: 120_000 }, async () => {
      const resumed = await post(`/v1/sandboxes/${id}/resume`);
      assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
      assert.equal(resumed.body.state, "running");
      assert.equal(resumed.body.pausedAt, null);
      assert.equal(await ok("echo back"), "back\n");
      const sum = await ok("sha256sum /home/user/data/blob.bin | cut -d' ' -f1");
      assert.equal(sum.trim(), createHash("sha256").update(blob).digest("hex"));
      assert.equal(await ok(`cat ${SHARE}/while-paused.txt`), "written while paused");
      // The upload made while paused reads back in the guest, byte for byte.
      const inGuest = await ok(`sha256sum ${SHARE}/uploads/while-paused.bin | cut -d' ' -f1`);
      assert.equal(inGuest.trim(), pausedUploadSha);
    });

    test("the in-memory counter continues after resume (same process, no reset)", {
      timeout: 120_000,
    }, async () => {
      assert.ok(counter, "the counter never ran");
      const before = counter;
      const after = await eventually(async () => {
        const c = readCounter(await ok("cat /tmp/counter"));
        return c && c.count > before.count ? c : undefined;
      });
      assert.equal(after.pid, before.pid, "the counting process was restarted");
    });

    test("snapshot: signed, with every file listed and the manifest on disk hashing to the signed digest", {
      timeout: 300_000,
    }, async () => {
      const r = await stack().json<{ snapshot: SnapshotJson } & ErrorJson>(`/v1/sandboxes/${id}/snapshot`, {
        method: "POST",
        body: JSON.stringify({ name: `snap-${suite}` }),
        signal: AbortSignal.timeout(240_000),
      });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      snap = r.body.snapshot;
      // Microvms keep memory; the jail keeps disk and share, and says so.
      assert.equal(snap.memory, runtime !== "jail");
      assert.match(snap.restoreSemantics, runtime === "jail" ? /start again/ : /continue/);
      assert.match(snap.kid, /^[0-9a-f]{16}$/);
      const names = snap.files.map((f) => f.name);
      assert.ok(names.includes("share.tar"), names.join(","));
      assert.ok(!names.includes("MANIFEST"));
      const dir = `${stack().stateDir}/snapshots/${snap.snapshotId}`;
      const manifest = readFileSync(`${dir}/MANIFEST`);
      assert.equal(createHash("sha256").update(manifest).digest("hex"), snap.manifestSha256);
      let total = 0;
      for (const f of snap.files) {
        const bytes = readFileSync(`${dir}/${f.name}`);
        assert.equal(createHash("sha256").update(bytes).digest("hex"), f.sha256, f.name);
        total += bytes.length;
      }
      assert.equal(Number(snap.sizeBytes), total);
      // The source keeps running.
      assert.equal(await ok("echo still-here"), "still-here\n");
    });

    test("restore: a new sandbox with the files, the share and (microVMs) the running process", {
      timeout: CREATE_MS + 60_000,
    }, async () => {
      const r = await stack().json<{ sandbox: SandboxJson } & ErrorJson>(
        `/v1/snapshots/${snap.snapshotId}/restore`,
        { method: "POST", body: "{}", signal: AbortSignal.timeout(CREATE_MS) },
      );
      assert.equal(r.status, 201, JSON.stringify(r.body));
      const clone = r.body.sandbox.sandboxId;
      clones.push(clone);
      assert.notEqual(clone, id);
      const inClone = (command: string) => okIn(clone, command);
      assert.equal(
        (await inClone("sha256sum /home/user/data/blob.bin | cut -d' ' -f1")).trim(),
        createHash("sha256").update(blob).digest("hex"),
      );
      assert.equal(await inClone(`cat ${SHARE}/while-paused.txt`), "written while paused");
      assert.equal(await inClone("echo $DNAH_SANDBOX_ID"), `${clone}\n`);
      const alive = (
        await inClone(`grep -qs counter /proc/${counter!.pid}/cmdline && echo alive || echo gone`)
      ).trim();
      assert.equal(alive, runtime === "jail" ? "gone" : "alive", "what a restore brings back");
      // The clone's share is its own folder on the host.
      assert.notEqual(stack().shareDir(clone), stack().shareDir(id));
      assert.ok(existsSync(`${stack().shareDir(clone)}/while-paused.txt`));
    });

    test("fork: two clones diverge independently and do not share random state", {
      timeout: 2 * CREATE_MS + 120_000,
    }, async () => {
      const r = await stack().json<ForkJson & ErrorJson>(`/v1/sandboxes/${id}/fork`, {
        method: "POST",
        body: JSON.stringify({ count: 2 }),
        signal: AbortSignal.timeout(2 * CREATE_MS + 60_000),
      });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      const ids = r.body.results.map((x) => {
        assert.ok(x.sandbox, JSON.stringify(x));
        return x.sandbox.sandboxId;
      });
      clones.push(...ids);
      assert.equal(new Set([id, ...ids]).size, 3);
      const [a, b] = ids as [string, string];
      const random = async (sid: string) => (await okIn(sid, "head -c16 /dev/urandom | od -An -tx1")).trim();
      assert.notEqual(await random(a), await random(b));
      assert.notEqual((await okIn(a, "hostname")).trim(), (await okIn(b, "hostname")).trim());
      await okIn(a, "echo only-a > /home/user/mine.txt");
      assert.equal((await okIn(b, "cat /home/user/mine.txt 2>/dev/null || echo none")).trim(), "none");
      assert.equal((await ok("cat /home/user/mine.txt 2>/dev/null || echo none")).trim(), "none");
      // The source kept running through the fork.
      assert.equal(await ok("echo source"), "source\n");
    });

    test("restore refuses a snapshot with one flipped byte, and nothing starts", {
      timeout: 180_000,
    }, async () => {
      const dir = `${stack().stateDir}/snapshots/${snap.snapshotId}`;
      const victim = runtime === "jail" ? "disk.tar" : "memory.bin";
      const path = `${dir}/${victim}`;
      const bytes = readFileSync(path);
      const at = Math.floor(bytes.length / 2);
      bytes[at] = (bytes[at] ?? 0) ^ 0x01;
      writeFileSync(path, bytes);
      const before = await stack().json<{ sandboxes: SandboxJson[] }>("/v1/sandboxes");
      const r = await stack().json<ErrorJson>(`/v1/snapshots/${snap.snapshotId}/restore`, {
        method: "POST",
        body: "{}",
        signal: AbortSignal.timeout(CREATE_MS),
      });
      assert.ok(r.status >= 400 && r.status < 500, `${r.status} ${JSON.stringify(r.body)}`);
      assert.match(r.body.message, new RegExp(victim.replace(".", "\\.")));
      const afterList = await stack().json<{ sandboxes: SandboxJson[] }>("/v1/sandboxes");
      assert.deepEqual(
        afterList.body.sandboxes.map((x) => x.sandboxId).sort(),
        before.body.sandboxes.map((x) => x.sandboxId).sort(),
      );
      const del = await stack().api(`/v1/snapshots/${snap.snapshotId}`, {
        method: "DELETE",
        signal: AbortSignal.timeout(CALL_MS),
      });
      assert.equal(del.status, 204);
      assert.equal(existsSync(dir), false, "snapshot folder left behind");
      for (const c of clones.splice(0)) {
        const d = await stack().api(`/v1/sandboxes/${c}`, {
          method: "DELETE",
          signal: AbortSignal.timeout(CALL_MS),
        });
        assert.equal(d.status, 204);
      }
    });

    test("delete: 404 after, no folder, cgroup or process left", { timeout: 120_000 }, async () => {
      const dir = `${stack().stateDir}/sandboxes/${id}`;
      const pids = cgroupPids(stack(), id);
      assert.ok(pids.length > 0, "the sandbox had processes in its cgroup");
      const del = await stack().api(`/v1/sandboxes/${id}`, {
        method: "DELETE",
        signal: AbortSignal.timeout(CALL_MS),
      });
      assert.equal(del.status, 204, await del.text());
      const gone = await stack().json<ErrorJson>(`/v1/sandboxes/${id}`);
      assert.equal(gone.status, 404);
      assert.equal(gone.body.code, "not_found");
      assert.equal(existsSync(dir), false, "folder left behind");
      assert.equal(existsSync(stack().shareDir(id)), false, "share left behind");
      for (const d of cgroupDirs(stack(), id)) assert.equal(existsSync(d), false, `cgroup left: ${d}`);
      assert.equal(existsSync(`/run/netns/${stack().cgroupParent}.${id}`), false, "netns left behind");
      assert.equal(readFileSync("/proc/self/mounts", "utf8").includes(dir), false, "mount left behind");
      await eventually(async () => pids.every((p) => !existsSync(`/proc/${p}`)), 30_000);
      assert.deepEqual(processesOf(stack(), id), [], "processes of the sandbox survived");
      id = "";
    });
  });
}
