/**
 * Templates built from steps on a microVM host (qemu under TCG): the build ends by flattening
 * the template's layers over its base's image into a disk image of its own, a VM boots from it
 * with the template's file, ENV, USER, WORKDIR and start command, a rebuild gets a new image
 * (made at its first boot when the build did not make it, once for concurrent callers) and the
 * old one is never booted again, a failed flatten names the template, DeleteTemplate removes
 * the images. Skipped, saying why, only when qemu or the base image (its kernel) is missing.
 * The manifest check that ties an image to its base image and layers is tested purely first.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { createLogger, createServiceClient, silentLogger } from "@dnah/platform";
import type { BuildTemplateRequestSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { TemplateStepKind, VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { TemplateImageError, toConnectError, VmImageMissingError } from "../src/domain/errors.js";
import { configFromEnv, createVmm, type Vmm } from "../src/index.js";
import { mountsUnder } from "../src/runtime/jail/mounts.js";
import { QemuRuntime } from "../src/runtime/qemu/qemu.js";
import { flatImageKey, VmImages } from "../src/runtime/vm/flatten.js";
import { findVmImage, manifestProblem } from "../src/runtime/vm/image.js";
import { resolveTemplate } from "../src/template/user-templates.js";
import { CACHE_DIR, exec, HOST_PATH, prepareQemu, QEMU_ACCEL, tunnelRequest, until } from "./qemu-helpers.js";

type Req = MessageInitShape<typeof BuildTemplateRequestSchema>;
const { RUN, ENV, WORKDIR, USER } = TemplateStepKind;

describe("microVM image manifest check (pure)", () => {
  const from = { baseTemplateId: "base", layerKeys: ["l1", "l2", "l3"] };
  const builtin = {
    templateId: "base",
    key: "k0",
    kernel: "vmlinuz",
    initramfs: "initramfs.cpio",
    rootfs: "rootfs.ext4",
    kernelRelease: "6.1.0-57-cloud-amd64",
    sourceRootfs: "/cache/templates/base/x/rootfs",
  };
  const flat = {
    ...builtin,
    templateId: "mine",
    key: "k1",
    base: { templateId: "base", key: "b1" },
    layers: ["l1", "l2", "l3"],
  };
  const expect = { templateId: "mine", built: { baseImageKey: "b1", from } };

  test("a built-in image fits a built-in template, not one built from steps", () => {
    assert.equal(manifestProblem(builtin, { templateId: "base" }), undefined);
    assert.match(manifestProblem(builtin, expect) ?? "", /made for template 'base'/);
    assert.match(manifestProblem({ ...builtin, templateId: "mine" }, expect) ?? "", /not made from steps/);
    assert.match(
      manifestProblem({ ...flat, templateId: "base" }, { templateId: "base" }) ?? "",
      /made from steps/,
    );
  });

  test("a flattened image fits only its base image's current key and exactly its layers", () => {
    assert.equal(manifestProblem(flat, expect), undefined);
    const { base: _b, ...noBase } = flat;
    assert.match(manifestProblem(noBase, expect) ?? "", /no base image/);
    assert.match(
      manifestProblem({ ...flat, base: { templateId: "code-interpreter", key: "b1" } }, expect) ?? "",
      /over template 'code-interpreter'/,
    );
    assert.match(
      manifestProblem({ ...flat, base: { templateId: "base", key: "b0" } }, expect) ?? "",
      /image b0, which is not its current one \(b1\)/,
    );
    for (const layers of [["l1", "l2"], ["l1", "l3", "l2"], ["l1", "l2", "l3", "l4"], "l1,l2,l3", undefined])
      assert.match(manifestProblem({ ...flat, layers }, expect) ?? "", /other layers/, String(layers));
  });

  test("file names must be plain names in the image folder", () => {
    for (const k of ["kernel", "initramfs", "rootfs", "key", "kernelRelease"]) {
      assert.match(manifestProblem({ ...flat, [k]: "../../etc/passwd" }, expect) ?? "", new RegExp(k));
      assert.match(manifestProblem({ ...flat, [k]: "" }, expect) ?? "", new RegExp(k));
    }
    assert.match(manifestProblem([], expect) ?? "", /not a JSON object/);
    assert.match(manifestProblem(null, expect) ?? "", /not a JSON object/);
  });

  test("the image key changes with the base image and with any layer", () => {
    const k = flatImageKey("b1", from);
    assert.match(k, /^[0-9a-f]{16}$/);
    assert.equal(flatImageKey("b1", { ...from }), k);
    assert.notEqual(flatImageKey("b2", from), k);
    assert.notEqual(flatImageKey("b1", { ...from, layerKeys: ["l1", "l2", "l4"] }), k);
    assert.notEqual(flatImageKey("b1", { ...from, layerKeys: ["l2", "l1", "l3"] }), k);
    assert.notEqual(flatImageKey("b1", { ...from, baseTemplateId: "code-interpreter" }), k);
  });
});

const prep = await prepareQemu();
if ("skip" in prep) process.stderr.write(`template-vm.test: skipping: ${prep.skip}\n`);

describe("templates built from steps on the qemu runtime", {
  skip: "skip" in prep ? prep.skip : false,
}, () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-tplvm-${suffix}`;
  const cgroupParent = `dnah-tplvm-${suffix}`;
  // Its own cache for layers, user templates and their images; the built-in templates, their
  // images, kernels and Node come from the real cache through links.
  const cacheDir = `${stateDir}-cache`;
  const tpl = `v${suffix}`;
  const imagesOf = join(cacheDir, "images", tpl);
  let vmm: Vmm;
  let runtime: QemuRuntime;
  let client: ReturnType<typeof createServiceClient<typeof VmmService>>;
  const long = { timeoutMs: 300_000 };
  const measured: Record<string, string> = {};

  const steps = (version: string): NonNullable<Req["steps"]> => [
    { kind: ENV, args: ["GREETING", "hello from a template"] },
    { kind: USER, args: ["user"] },
    { kind: WORKDIR, args: ["/srv/app"] },
    { kind: RUN, args: ["echo '<h1>served from the template</h1>' > /srv/app/index.html"] },
    // Last, so a rebuild with another version reruns only this step.
    { kind: RUN, args: [`echo ${version} > /srv/app/version`] },
  ];
  const req = (version: string): Req => ({
    templateId: tpl,
    baseTemplateId: "base",
    steps: steps(version),
    start: { command: "python3 -m http.server 8080", readyPort: 8080, readyCommand: "" },
    files: {},
  });

  async function build(r: Req): Promise<string[]> {
    const logs: string[] = [];
    try {
      for await (const m of client.buildTemplate(r, long)) if (m.log) logs.push(m.log.message);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${logs.join("\n")}`);
    }
    return logs;
  }

  const manifest = () =>
    JSON.parse(readFileSync(join(imagesOf, "current", "manifest.json"), "utf8")) as {
      key: string;
      base: { templateId: string; key: string };
      layers: string[];
      rootfsBytes: number;
      contentBytes: number;
    };
  const baseImageKey = () =>
    (
      JSON.parse(readFileSync(join(CACHE_DIR, "images", "base", "current", "manifest.json"), "utf8")) as {
        key: string;
      }
    ).key;
  const template = async () => (await resolveTemplate(cacheDir, tpl, vmm.context.cfg.debianMirror))!.image;

  async function boot(sandboxId: string): Promise<number> {
    const r = await client.createVm({ sandboxId, templateId: tpl, cpuCount: 1, memoryMib: 384 }, long);
    return r.vm?.bootMs ?? -1;
  }

  async function served(sandboxId: string): Promise<string> {
    const res = await tunnelRequest(
      vmm.url,
      sandboxId,
      { port: 8080, method: "GET", path: "/index.html" },
      20_000,
    );
    assert.equal(res.status, 200, res.body.toString());
    return res.body.toString();
  }

  before(async () => {
    mkdirSync(join(cacheDir, "images"), { recursive: true });
    for (const e of readdirSync(CACHE_DIR))
      if (!["layers", "user-templates", "images"].includes(e))
        symlinkSync(join(CACHE_DIR, e), join(cacheDir, e));
    symlinkSync(join(CACHE_DIR, "images", "base"), join(cacheDir, "images", "base"));
    runtime = new QemuRuntime({
      stateDir,
      accel: QEMU_ACCEL,
      cacheDir,
      cgroupParent,
      pidsMax: 4096,
      hostPath: HOST_PATH,
      logger: createLogger("template-vm-test", { level: "warn" }),
    });
    vmm = await createVmm(
      configFromEnv({
        DNAH_VMM_PORT: "0",
        DNAH_STATE_DIR: stateDir,
        DNAH_CGROUP_PARENT: cgroupParent,
        DNAH_CACHE_DIR: cacheDir,
        DNAH_BOOT_TIMEOUT_MS: "170000",
      }),
      process.env.DNAH_TEST_LOG ? createLogger("vmm", { level: "info" }) : silentLogger(),
      { runtime },
    );
    client = createServiceClient(VmmService, await vmm.start());
  });
  after(async () => {
    await vmm?.close();
    // Nothing of ours stays mounted (a flatten's loop and overlay mounts) or in namespaces.
    assert.deepEqual(await mountsUnder(cacheDir), []);
    assert.deepEqual(
      readdirSync("/run/netns").filter((n) => n.startsWith(`${cgroupParent}`)),
      [],
    );
    for (const d of [stateDir, cacheDir]) rmSync(d, { recursive: true, force: true });
    process.stderr.write(`template-vm.test: measured ${JSON.stringify(measured)}\n`);
  });

  test("the build ends by flattening the template into a disk image tied to its base image and layers", {
    timeout: 300_000,
  }, async () => {
    const t0 = performance.now();
    const logs = await build(req("v1"));
    measured.buildMs = String(Math.round(performance.now() - t0));
    const ready = logs.find((l) => /^microVM disk image \w+ ready in/.test(l));
    assert.ok(ready, logs.join("\n"));
    assert.match(
      ready,
      /ready in [0-9.]+ s: \d+ MiB ext4 \(sparse\) for \d+ MiB of files, \d+ MiB on the host's disk/,
    );
    // The last phase, after the steps.
    assert.ok(logs.indexOf(ready) > logs.findIndex((l) => /^template '.*' ready/.test(l)), logs.join("\n"));
    measured.flatten = ready;
    const m = manifest();
    const rec = JSON.parse(readFileSync(join(cacheDir, "user-templates", `${tpl}.json`), "utf8")) as {
      layers: string[];
    };
    assert.deepEqual(m.layers, rec.layers);
    assert.deepEqual(m.base, { templateId: "base", key: baseImageKey() });
    measured.image = `${Math.round(m.rootfsBytes / 1048576)} MiB disk, ${Math.round(m.contentBytes / 1048576)} MiB of files`;
  });

  test("a rebuild gets a new image, made once at its first boot, which runs the template; the old image is never booted", {
    timeout: 300_000,
  }, async () => {
    const old = manifest();
    // The builder alone (no flatten phase), as for a template built before microVM images were.
    await vmm.context.templates.build(
      {
        templateId: tpl,
        baseTemplateId: "base",
        steps: steps("v2").map((s) => ({ kind: s.kind!, args: s.args ?? [], filesHash: "", force: false })),
        start: { command: "python3 -m http.server 8080", readyPort: 8080, readyCommand: "" },
        files: new Map(),
        force: false,
      },
      () => {},
      new AbortController().signal,
    );
    const t = await template();
    assert.notDeepEqual(t.built?.layerKeys, old.layers);
    // The image on disk is v1's: refused for the rebuilt template.
    await assert.rejects(findVmImage(cacheDir, tpl, t.rootfsDir, t.built), (e: unknown) => {
      assert.ok(e instanceof VmImageMissingError);
      assert.match(e.message, /made from other layers/);
      return true;
    });

    // A boot makes it; a build finishing meanwhile (prepareTemplate) waits for that one.
    const id = `b${suffix}`;
    const booting = boot(id);
    await until(
      "the boot's flatten to start",
      () => readdirSync(imagesOf).some((n) => n.startsWith(".tmp-")),
      60_000,
    );
    const lines: string[] = [];
    await runtime.prepareTemplate(t, (l) => lines.push(l));
    assert.deepEqual(lines, [
      "microVM disk image: waiting for the one already being made (another boot or build)",
    ]);
    measured.bootWithFlattenMs = String(await booting);
    const now = manifest();
    assert.notEqual(now.key, old.key);
    assert.deepEqual(now.layers, t.built?.layerKeys);
    // One new image folder beside the old one (kept: VMs booted from it name it by path).
    assert.deepEqual(readdirSync(imagesOf).sort(), [now.key, old.key, "current"].sort());

    // The start command was ready (port 8080) before CreateVm answered: serving its workdir.
    assert.equal(await served(id), "<h1>served from the template</h1>\n");
    const r = await exec(
      vmm.url,
      id,
      'cat /srv/app/version; echo "$GREETING"; p=$(ps -o pid= -C python3 | head -1 | tr -d " "); ps -o user=,args= -p "$p"; readlink "/proc/$p/cwd"',
    );
    assert.equal(r.exitCode, 0, r.stderr);
    const [version, greeting, proc, cwd] = r.stdout.trim().split("\n");
    // v2: the rebuilt layers, not the old image's v1.
    assert.equal(version, "v2");
    assert.equal(greeting, "hello from a template");
    assert.match(proc ?? "", /^user\s+.*http\.server 8080/);
    assert.equal(cwd, "/srv/app");
    await client.deleteVm({ sandboxId: id });

    // The next build finds the image up to date.
    const again = await build(req("v2"));
    assert.ok(again.includes(`microVM disk image ${now.key}: up to date`), again.join("\n"));
  });

  test("a failed flatten names the template; nothing stays mounted or half-made", async () => {
    const t = await template();
    const images = new VmImages({ cacheDir, hostPath: HOST_PATH, logger: silentLogger() });
    const broken = {
      ...t,
      templateId: `x${suffix}`,
      layers: [join(cacheDir, "layers", "no-such-layer", "fs")],
      built: { baseTemplateId: "base", layerKeys: ["no-such-layer"] },
    };
    await assert.rejects(images.find(broken), (e: unknown) => {
      assert.ok(e instanceof TemplateImageError);
      assert.match(
        e.message,
        new RegExp(`^template 'x${suffix}': cannot make its microVM disk image: mount failed`),
      );
      const ce = toConnectError(e);
      assert.equal(ce.code, Code.FailedPrecondition);
      assert.doesNotMatch(ce.rawMessage, /\n\s+at /);
      return true;
    });
    assert.deepEqual(readdirSync(join(cacheDir, "images", `x${suffix}`)), []);
    assert.deepEqual(await mountsUnder(cacheDir), []);
  });

  test("DeleteTemplate removes the template's images", async () => {
    assert.ok(existsSync(imagesOf));
    await client.deleteTemplate({ templateId: tpl });
    assert.equal(existsSync(imagesOf), false);
    assert.deepEqual(
      readdirSync(join(cacheDir, "images")).filter((n) => n.startsWith(".deleted-")),
      [],
    );
    // The base's image is untouched.
    assert.ok(existsSync(join(cacheDir, "images", "base", "current", "manifest.json")));
  });
});
