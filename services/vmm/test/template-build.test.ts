import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createLogger, createServiceClient, silentLogger } from "@dnah/platform";
import type { BuildTemplateRequestSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { TemplateStepKind, VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { Process } from "@dnah/proto/process/process_pb";
import { configFromEnv, createVmm, DEFAULT_CACHE_DIR, type Vmm } from "../src/index.js";
import { AGENT_PORT, vsockAgent } from "../src/vsock/agent-http.js";

type Req = MessageInitShape<typeof BuildTemplateRequestSchema>;
const { RUN, COPY, ENV, WORKDIR, USER } = TemplateStepKind;

/**
 * BuildTemplate on the jail runtime, for real: steps run in build jails (network out, none to
 * the host), layers are cached by key, a sandbox boots from the layers with the template's
 * env, workdir, user and start command, a changed step reruns only from there, a failing step
 * names itself, and a cancelled build leaves nothing.
 */
describe("vmm BuildTemplate (jail)", () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-vmm-tpl-${suffix}`;
  // Its own cache for layers and user templates; the built-in templates, kernels and Node
  // come from the real cache through links.
  const cacheDir = `${stateDir}-cache`;
  const realCache = process.env.DNAH_CACHE_DIR ?? DEFAULT_CACHE_DIR;
  const tpl = `t${suffix}`;
  let vmm: Vmm;
  let client: ReturnType<typeof createServiceClient<typeof VmmService>>;
  const long = { timeoutMs: 300_000 };

  // A context tar with one file, addressed by the sha256 of its bytes.
  const ctxDir = `${stateDir}-ctx`;
  let tar: Uint8Array;
  let tarHash: string;

  async function build(req: Req, signal?: AbortSignal) {
    const logs: string[] = [];
    let result: { cachedSteps: number; builtSteps: number; buildKey: string } | undefined;
    try {
      for await (const m of client.buildTemplate(req, { ...long, ...(signal ? { signal } : {}) })) {
        if (m.log) logs.push(m.log.message);
        if (m.result) result = m.result;
      }
    } catch (err) {
      if (process.env.DNAH_TEST_LOG) console.error(logs.join("\n"));
      throw err;
    }
    return { logs, result: result! };
  }

  /** Runs a command in a sandbox through its agent: exit code and stdout. */
  async function run(id: string, cmd: string, user = "user"): Promise<{ code: number; out: string }> {
    const agent = vsockAgent(`${stateDir}/sandboxes/${id}/vsock/vsock.sock`, AGENT_PORT);
    const p = createClient(
      Process,
      createConnectTransport({ baseUrl: "http://agent", httpVersion: "1.1", nodeOptions: { agent } }),
    );
    let code = -1;
    let out = "";
    for await (const r of p.start(
      { process: { cmd: "/bin/bash", args: ["-l", "-c", cmd], envs: {} } },
      {
        headers: { authorization: `Basic ${Buffer.from(`${user}:`).toString("base64")}` },
        timeoutMs: 30_000,
      },
    )) {
      const ev = r.event?.event;
      if (ev?.case === "data" && ev.value.output.case === "stdout")
        out += new TextDecoder().decode(ev.value.output.value);
      if (ev?.case === "end") code = ev.value.exitCode;
    }
    agent.destroy();
    return { code, out };
  }

  const steps = (last: string): NonNullable<Req["steps"]> => [
    { kind: ENV, args: ["GREETING", "hello there", "STAGE", "one"] },
    { kind: RUN, args: ['echo "$GREETING" > /etc/greeting && id -un > /etc/built-by'] },
    { kind: USER, args: ["user"] },
    // Made by root, owned by the build's user (E2B's WORKDIR); COPY's files too.
    { kind: WORKDIR, args: ["/srv/app"] },
    { kind: COPY, args: ["site", "."], filesHash: tarHash },
    { kind: RUN, args: ["id -un > /srv/app/whoami.txt"] },
    { kind: RUN, args: [last] },
  ];

  before(async () => {
    mkdirSync(cacheDir, { recursive: true });
    for (const e of readdirSync(realCache))
      if (e !== "layers" && e !== "user-templates") symlinkSync(join(realCache, e), join(cacheDir, e));
    mkdirSync(join(ctxDir, "site"), { recursive: true });
    writeFileSync(join(ctxDir, "site", "index.html"), `<h1>${suffix}</h1>\n`);
    execFileSync("tar", ["-czf", `${ctxDir}.tgz`, "-C", ctxDir, "site"]);
    tar = readFileSync(`${ctxDir}.tgz`);
    tarHash = createHash("sha256").update(tar).digest("hex");
    vmm = await createVmm(
      configFromEnv({
        DNAH_VMM_PORT: "0",
        DNAH_STATE_DIR: stateDir,
        DNAH_CACHE_DIR: cacheDir,
        DNAH_CGROUP_PARENT: `dnah-vmm-tpl-${suffix}`,
        DNAH_VMM_CAPACITY: "4",
      }),
      process.env.DNAH_TEST_LOG ? createLogger("vmm", { level: "error" }) : silentLogger(),
    );
    client = createServiceClient(VmmService, await vmm.start());
  });
  after(async () => {
    await vmm?.close();
    for (const d of [stateDir, cacheDir, ctxDir, `${ctxDir}.tgz`])
      rmSync(d, { recursive: true, force: true });
  });

  test("builds from base, boots a sandbox of it, and a rebuild reruns only the changed step", async () => {
    const first = await build({
      templateId: tpl,
      baseTemplateId: "base",
      steps: steps("echo v1 > /srv/app/version"),
      start: { command: "python3 -m http.server 8080", readyPort: 8080, readyCommand: "" },
      files: { [tarHash]: tar },
    });
    assert.equal(first.result.cachedSteps, 0, first.logs.join("\n"));
    assert.equal(first.result.builtSteps, 5);
    assert.ok(first.logs.some((l) => /step 2\/7 RUN/.test(l)));

    const id = `s${suffix}`;
    await client.createVm({
      sandboxId: id,
      templateId: tpl,
      cpuCount: 1,
      memoryMib: 256,
      envVars: { STAGE: "two" },
    });
    assert.deepEqual(await run(id, "cat /etc/greeting /etc/built-by"), {
      code: 0,
      out: "hello there\nroot\n",
    });
    assert.deepEqual(
      await run(
        id,
        "cat /srv/app/index.html /srv/app/whoami.txt /srv/app/version; stat -c %U /srv/app/index.html",
      ),
      {
        code: 0,
        out: `<h1>${suffix}</h1>\nuser\nv1\nuser\n`,
      },
    );
    // The template's ENV reaches the sandbox's processes; the sandbox's own variables win.
    assert.deepEqual(await run(id, 'echo "$GREETING/$STAGE"'), { code: 0, out: "hello there/two\n" });
    // The start command serves (it was ready before CreateVm answered), as the template's user, in its workdir.
    const served = await run(
      id,
      "curl -s http://127.0.0.1:8080/index.html; ps -o user= -C python3 | head -1",
    );
    assert.equal(served.out, `<h1>${suffix}</h1>\nuser\n`);
    await client.deleteVm({ sandboxId: id });

    const second = await build({
      templateId: tpl,
      baseTemplateId: "base",
      steps: steps("echo v2 > /srv/app/version"),
      start: {
        command: "python3 -m http.server 8080",
        readyPort: 0,
        readyCommand: "curl -sf http://127.0.0.1:8080/ >/dev/null",
      },
      files: { [tarHash]: tar },
    });
    assert.equal(second.result.cachedSteps, 4, second.logs.join("\n"));
    assert.equal(second.result.builtSteps, 1);
    assert.notEqual(second.result.buildKey, first.result.buildKey);
    const id2 = `r${suffix}`;
    await client.createVm({ sandboxId: id2, templateId: tpl, cpuCount: 1, memoryMib: 256 });
    assert.equal((await run(id2, "cat /srv/app/version")).out, "v2\n");
    await client.deleteVm({ sandboxId: id2 });
  });

  test("a build reaches public addresses but not the host's services or private ranges", async () => {
    const hostIps = Object.values(networkInterfaces())
      .flat()
      .filter((a) => a && a.family === "IPv4" && !a.internal)
      .map((a) => a!.address);
    const probes = [...hostIps, "127.0.0.1"].map(
      (ip) =>
        `curl -s -m 3 -o /dev/null http://${ip}:${new URL(vmm.url).port}/ && echo "REACHED ${ip}" || true`,
    );
    const r = await build({
      templateId: `n${suffix}`,
      baseTemplateId: "base",
      steps: [
        {
          kind: RUN,
          args: ["curl -sS -m 20 -o /dev/null -w 'registry %{http_code}\\n' https://registry.npmjs.org/"],
        },
        { kind: RUN, args: [probes.join("\n")] },
      ],
      files: {},
    });
    assert.ok(r.logs.includes("registry 200"), r.logs.join("\n"));
    assert.equal(r.logs.filter((l) => l.startsWith("REACHED")).join(","), "");
  });

  test("a failing step names itself and its exit code; nothing half-built stays", async () => {
    await assert.rejects(
      build({
        templateId: `f${suffix}`,
        baseTemplateId: "base",
        steps: [{ kind: RUN, args: ["echo about to fail; exit 3"] }],
        files: {},
      }),
      (e: unknown) => {
        const ce = ConnectError.from(e);
        assert.equal(Code[ce.code], Code[Code.FailedPrecondition]);
        assert.match(ce.rawMessage, /step 1\/1 RUN .* failed with exit code 3/);
        return true;
      },
    );
    await assert.rejects(
      build({ templateId: `b${suffix}`, baseTemplateId: "no-such-base", steps: [], files: {} }),
      (e: unknown) => ConnectError.from(e).code === Code.NotFound,
    );
    await assert.rejects(
      build({
        templateId: `c${suffix}`,
        baseTemplateId: "base",
        steps: [{ kind: COPY, args: ["x", "/x"], filesHash: "0".repeat(64) }],
        files: {},
      }),
      (e: unknown) => ConnectError.from(e).code === Code.InvalidArgument,
    );
    assert.deepEqual(
      readdirSync(join(cacheDir, "layers")).filter((n) => n.startsWith(".tmp-")),
      [],
    );
  });

  test("cancelling a build stops its step at once and keeps nothing of it", async () => {
    const ac = new AbortController();
    const t = performance.now();
    const p = build(
      {
        templateId: `k${suffix}`,
        baseTemplateId: "base",
        steps: [{ kind: RUN, args: ["echo started; sleep 60"] }],
        files: {},
      },
      ac.signal,
    );
    await new Promise((r) => setTimeout(r, 1500));
    ac.abort();
    await assert.rejects(p);
    assert.ok(performance.now() - t < 30_000);
    // The server side notices the cancel and removes the step's folder, network and cgroup.
    for (let i = 0; i < 50; i++) {
      if (readdirSync(join(cacheDir, "layers")).every((n) => !n.startsWith(".tmp-"))) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(
      readdirSync(join(cacheDir, "layers")).filter((n) => n.startsWith(".tmp-")),
      [],
    );
    assert.equal(readdirSync("/run/netns").filter((n) => n.startsWith(`dnah-vmm-tpl-${suffix}`)).length, 0);
  });
});
