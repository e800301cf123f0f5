import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { InvalidArgumentError } from "../src/domain/errors.js";
import { parseErrorBody } from "../src/runtime/cloud-hypervisor/api.js";
import { featuresOf, parseChVersion, unsupportedReason } from "../src/runtime/cloud-hypervisor/version.js";
import {
  buildRestoreConfig,
  buildSnapshotConfig,
  buildVmConfig,
  restoreLeavesPaused,
  snapshotUrl,
  VM_ROOT,
  type VmConfigInput,
  vmLayout,
} from "../src/runtime/cloud-hypervisor/vm-config.js";
import { decideRuntime, findExecutable } from "../src/runtime/select.js";
import { ChSchema, SCHEMA_FILE } from "./ch-standin/schema.js";
import { isFailure, transition, type VmState } from "./ch-standin/state.js";

// Pure checks of what dnah sends Cloud Hypervisor, against the vendored upstream OpenAPI
// document. No cloud-hypervisor binary and no KVM are involved.

const schema = new ChSchema();
const ns = vmLayout(VM_ROOT);
const full: VmConfigInput = {
  cpuCount: 2,
  memoryMib: 1024,
  kernel: "/var/cache/dnah/images/base/k1/vmlinuz",
  initramfs: "/var/cache/dnah/images/base/k1/initramfs.cpio",
  cmdline: "console=ttyS0 dnah.id=abc",
  disk: { path: `${ns.diskNoExt}.qcow2`, format: "qcow2" },
  net: { tap: "tap0", mac: "02:fc:00:00:00:05" },
  share: { socket: ns.virtiofsSocket, tag: "dnah-share" },
  vsockSocket: ns.vsockSocket,
  serialFile: ns.serialLog,
};

describe("vendored Cloud Hypervisor schema (no CH binary involved)", () => {
  test("is the upstream file named in its header (sha256 of the body matches)", () => {
    const text = readFileSync(SCHEMA_FILE, "utf8");
    const lines = text.split("\n");
    const body = lines.slice(lines.findIndex((l) => !l.startsWith("#"))).join("\n");
    const named = /sha256 of the upstream file\s*\n#\s*([0-9a-f]{64})/.exec(text)?.[1];
    assert.ok(named, "header names a sha256");
    assert.equal(createHash("sha256").update(body).digest("hex"), named);
    assert.equal(schema.apiVersion, "0.3.0");
  });

  test("knows which endpoints take which body", () => {
    assert.deepEqual(schema.request("put", "vm.create"), { schema: "VmConfig", required: true });
    assert.deepEqual(schema.request("put", "vm.restore"), { schema: "RestoreConfig", required: true });
    assert.equal(schema.request("put", "vm.boot")?.schema, undefined);
    assert.equal(schema.request("get", "vm.create"), undefined);
  });

  test("rejects deliberately bad bodies, naming each problem", () => {
    const good = buildVmConfig(full);
    const problems = schema.validate("VmConfig", {
      ...good,
      cpus: { boot_vcpus: 0 },
      vsock: { cid: 2, socket: "/x" },
      console: { mode: "Serial" },
      memroy: { size: 1 },
    });
    const text = problems.join("\n");
    assert.match(text, /unknown field 'memroy'/);
    assert.match(text, /\/cpus: must have required property 'max_vcpus'/);
    assert.match(text, /\/cpus\/boot_vcpus: must be >= 1/);
    assert.match(text, /\/vsock\/cid: must be >= 3/);
    assert.match(text, /\/console\/mode: must be equal to one of the allowed values/);
    assert.notDeepEqual(schema.validate("VmConfig", {}), []); // payload is required
    assert.notDeepEqual(schema.validate("RestoreConfig", { source_url: "file:///x", resume: "yes" }), []);
  });
});

describe("VmConfig / RestoreConfig builders (pure, validated against the upstream schema)", () => {
  test("a full VM config is valid and says what the runtime needs", () => {
    const c = buildVmConfig(full);
    assert.deepEqual(schema.validate("VmConfig", c), []);
    assert.equal(c.memory.size, 1024 * 1024 * 1024);
    assert.equal(c.memory.shared, true, "virtio-fs needs shared memory");
    assert.deepEqual(c.cpus, { boot_vcpus: 2, max_vcpus: 2 });
    assert.deepEqual(c.disks[0], {
      path: `${VM_ROOT}/rootfs.qcow2`,
      id: "rootfs",
      readonly: false,
      image_type: "Qcow2",
      backing_files: true,
    });
    assert.deepEqual(c.console, { mode: "Off" });
    assert.deepEqual(c.serial, { mode: "File", file: `${VM_ROOT}/serial.log` });
    assert.deepEqual(c.vsock, { cid: 3, socket: `${VM_ROOT}/vm.vsock`, id: "vsock0" });
    assert.equal(c.fs?.[0]?.socket, `${VM_ROOT}/virtiofsd.sock`);
    assert.equal(c.net?.[0]?.tap, "tap0");
    assert.equal(c.payload.initramfs, full.initramfs);
  });

  test("a minimal VM config (raw disk, no share, no NIC) is valid and not shared", () => {
    const { net: _n, share: _s, initramfs: _i, ...rest } = full;
    const c = buildVmConfig({ ...rest, disk: { path: `${ns.diskNoExt}.raw`, format: "raw" } });
    assert.deepEqual(schema.validate("VmConfig", c), []);
    assert.equal(c.memory.shared, undefined);
    assert.equal(c.net, undefined);
    assert.equal(c.fs, undefined);
    assert.equal(c.disks[0]?.image_type, "Raw");
    assert.equal(c.disks[0]?.backing_files, undefined);
  });

  test("bad input is an InvalidArgumentError naming every problem", () => {
    assert.throws(
      () =>
        buildVmConfig({
          ...full,
          cpuCount: 0,
          memoryMib: 8,
          kernel: "vmlinuz",
          net: { tap: "a-very-long-tap-name", mac: "zz" },
        }),
      (err: Error) =>
        err instanceof InvalidArgumentError &&
        /cpuCount/.test(err.message) &&
        /memoryMib/.test(err.message) &&
        /kernel must be absolute/.test(err.message) &&
        /tap name/.test(err.message) &&
        /mac/.test(err.message),
    );
  });

  test("restore and snapshot bodies follow the release: resume only from v52", () => {
    const v53 = featuresOf(parseChVersion("53.0.0")!);
    const v51 = featuresOf(parseChVersion("51.1.0")!);
    const r53 = buildRestoreConfig("/var/lib/dnah/snap/s1", true, v53);
    const r51 = buildRestoreConfig("/var/lib/dnah/snap/s1", true, v51);
    assert.deepEqual(r53, {
      source_url: "file:///var/lib/dnah/snap/s1",
      memory_restore_mode: "Copy",
      resume: true,
    });
    assert.deepEqual(r51, { source_url: "file:///var/lib/dnah/snap/s1" });
    assert.deepEqual(schema.validate("RestoreConfig", r53), []);
    assert.deepEqual(schema.validate("RestoreConfig", r51), []);
    assert.equal(restoreLeavesPaused(true, v51), true);
    assert.equal(restoreLeavesPaused(true, v53), false);
    assert.equal(restoreLeavesPaused(false, v51), false);
    assert.deepEqual(schema.validate("VmSnapshotConfig", buildSnapshotConfig("/tmp/s")), []);
    assert.throws(() => snapshotUrl("relative/dir"), InvalidArgumentError);
    assert.throws(() => snapshotUrl("/tmp/with space"), InvalidArgumentError);
  });
});

describe("CH versions and error bodies (§1.3, §1.8)", () => {
  test("versions parse from ping and --version forms; features follow the release table", () => {
    assert.deepEqual(parseChVersion("53.0.0"), { major: 53, minor: 0, text: "53.0.0" });
    assert.equal(parseChVersion("cloud-hypervisor v52.1-12-gdeadbeef")?.major, 52);
    assert.equal(parseChVersion("no digits"), undefined);
    assert.deepEqual(featuresOf(parseChVersion("46.0")!), {
      jsonErrorBodies: false,
      restoreResume: false,
      notCreatedIs404: false,
    });
    assert.deepEqual(featuresOf(parseChVersion("53.0.0")!), {
      jsonErrorBodies: true,
      restoreResume: true,
      notCreatedIs404: true,
    });
    assert.match(unsupportedReason(parseChVersion("50.2.0")!) ?? "", /too old.*v51/);
    assert.equal(unsupportedReason(parseChVersion("51.0.0")!), undefined);
  });

  test("error bodies: JSON chain from v47, plain text before, micro_http objects", () => {
    const v53 = featuresOf(parseChVersion("53.0.0")!);
    const v46 = featuresOf(parseChVersion("46.0.0")!);
    assert.deepEqual(parseErrorBody('["Error from API","The VM could not boot","No such file"]', v53), [
      "Error from API",
      "The VM could not boot",
      "No such file",
    ]);
    assert.deepEqual(parseErrorBody('["a"]', v46), ['["a"]']);
    assert.deepEqual(parseErrorBody("VmNotCreated", v46), ["VmNotCreated"]);
    assert.deepEqual(parseErrorBody('{ "error": "Too many open connections" }', v53), [
      "Too many open connections",
    ]);
    assert.deepEqual(parseErrorBody("", v53), []);
  });
});

describe("runtime selection (pure decision)", () => {
  const ch = { path: "/usr/local/bin/cloud-hypervisor" };
  const none = { missing: "no cloud-hypervisor on PATH (set DNAH_CH_BIN)" };
  test("auto picks cloud-hypervisor only with both the binary and a usable /dev/kvm", () => {
    assert.equal(decideRuntime("auto", { ch, kvm: true }).name, "cloud-hypervisor");
    const noKvm = decideRuntime("auto", { ch, kvm: "ENOENT" });
    assert.equal(noKvm.name, "jail");
    assert.match(noKvm.reason, /ENOENT/);
    const noBin = decideRuntime("auto", { ch: none, kvm: true });
    assert.equal(noBin.name, "jail");
    assert.match(noBin.reason, /no cloud-hypervisor on PATH/);
  });

  test("explicit choices: jail always, cloud-hypervisor needs the binary and warns without KVM", () => {
    assert.equal(decideRuntime("jail", { ch, kvm: true }).name, "jail");
    assert.throws(() => decideRuntime("cloud-hypervisor", { ch: none, kvm: true }), /DNAH_CH_BIN/);
    const d = decideRuntime("cloud-hypervisor", { ch, kvm: "EACCES" });
    assert.equal(d.name, "cloud-hypervisor");
    assert.match(d.warning ?? "", /EACCES/);
    assert.equal(decideRuntime("qemu", { ch: none, kvm: "ENOENT" }).name, "qemu");
  });

  test("findExecutable searches PATH and accepts absolute paths", () => {
    assert.equal(findExecutable("sh", "/nonexistent:/bin"), "/bin/sh");
    assert.equal(findExecutable("/bin/sh", ""), "/bin/sh");
    assert.equal(findExecutable("surely-not-a-binary-dnah", "/bin:/usr/bin"), undefined);
  });
});

describe("the stand-in's state machine encodes CH's table (§1.4)", () => {
  const v53 = { major: 53, minor: 0 };
  const v52 = { major: 52, minor: 0 };
  const states: Array<VmState | undefined> = [undefined, "Created", "Running", "Paused"];
  test("pause needs Running, resume needs Paused, snapshot needs Paused, restore a fresh VMM", () => {
    const ok = (ep: string, s: VmState | undefined) => !isFailure(transition(ep, s, v53));
    assert.deepEqual(
      states.map((s) => ok("vm.pause", s)),
      [false, false, true, false],
    );
    assert.deepEqual(
      states.map((s) => ok("vm.resume", s)),
      [false, false, false, true],
    );
    assert.deepEqual(
      states.map((s) => ok("vm.snapshot", s)),
      [false, false, false, true],
    );
    assert.deepEqual(
      states.map((s) => ok("vm.restore", s)),
      [true, false, false, false],
    );
    assert.deepEqual(
      states.map((s) => ok("vm.delete", s)),
      [true, true, true, true],
    );
  });

  test("'not created' is 404 from v53 and 500 before; wrong state is 500; shutdown keeps the config", () => {
    const a = transition("vm.boot", undefined, v53);
    const b = transition("vm.boot", undefined, v52);
    assert.ok(isFailure(a) && a.status === 404);
    assert.ok(isFailure(b) && b.status === 500);
    const c = transition("vm.pause", "Paused", v53);
    assert.ok(isFailure(c) && c.status === 500);
    const d = transition("vm.shutdown", "Running", v53);
    assert.ok(!isFailure(d) && d.next === "Created");
    const r52 = transition("vm.restore", undefined, v52, { resume: true });
    const r51 = transition("vm.restore", undefined, { major: 51, minor: 0 }, { resume: true });
    assert.ok(!isFailure(r52) && r52.next === "Running");
    assert.ok(!isFailure(r51) && r51.next === "Paused");
  });
});
