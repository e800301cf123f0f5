/**
 * Shared by runtimes.test.ts and qemu.test.ts: prepares the qemu runtime's image (agent bundled
 * from this checkout, template, Node runtime, kernel; all cached), and talks to a sandbox's
 * agent through the vmm's tunnel the way the gateway does (Connect JSON, /files).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { dialTunnel } from "@dnah/platform";
import { build } from "esbuild";
import { buildGuestImage } from "../../../guest/image/build.js";
import { DEFAULT_CACHE_DIR, DEFAULT_DEBIAN_MIRROR } from "../src/config.js";
import { QemuRuntime } from "../src/runtime/qemu/qemu.js";
import { buildTemplate } from "../src/template/build.js";
import { ensureNodeRuntime } from "../src/template/node-runtime.js";

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const CACHE_DIR = process.env.DNAH_CACHE_DIR ?? DEFAULT_CACHE_DIR;
/**
 * The tests' qemu accelerator: TCG unless DNAH_QEMU_ACCEL says otherwise (this machine has a
 * /dev/kvm whose nested KVM does not boot a guest in time; TCG is what the suite measures).
 */
export const QEMU_ACCEL = (process.env.DNAH_QEMU_ACCEL ?? "tcg") as "auto" | "kvm" | "tcg";
export const HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Builds (or reuses) the base image with the agent bundled from this checkout. Resolves with
 * a reason to skip when qemu, its helpers or the kernel are missing on this host.
 */
export async function prepareQemu(): Promise<{ skip: string } | { kernelRelease: string }> {
  const missing = QemuRuntime.missing({ cacheDir: CACHE_DIR });
  if (missing.length > 0) return { skip: `qemu runtime unavailable: missing ${missing.join(", ")}` };
  const agentDir = mkdtempSync(join(tmpdir(), "dnah-agent-"));
  try {
    await build({
      entryPoints: [join(REPO, "guest", "src", "main.ts")],
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      outfile: join(agentDir, "agent.mjs"),
      legalComments: "none",
      logLevel: "error",
      banner: {
        js: "import{createRequire as __dnahCreateRequire}from'module';const require=__dnahCreateRequire(import.meta.url);",
      },
    });
    const env = { PATH: HOST_PATH };
    const template = await buildTemplate("base", { cacheDir: CACHE_DIR, mirror: DEFAULT_DEBIAN_MIRROR, env });
    try {
      const image = await buildGuestImage({
        templateId: "base",
        rootfsDir: template.rootfsDir,
        nodeRuntimeDir: await ensureNodeRuntime(CACHE_DIR),
        agentDir,
        cacheDir: CACHE_DIR,
        env,
      });
      return { kernelRelease: image.manifest.kernelRelease };
    } catch (err) {
      const msg = (err as Error).message;
      // No kernel: the archive cannot be reached and nothing is cached.
      if (/^apt-(get|cache) /.test(msg)) return { skip: `guest kernel unavailable: ${msg.slice(0, 300)}` };
      throw err;
    }
  } finally {
    rmSync(agentDir, { recursive: true, force: true });
  }
}

export interface AgentReply {
  status: number;
  body: Buffer;
}

/** One HTTP request to guest `port` through the vmm's tunnel. */
export async function tunnelRequest(
  vmmUrl: string,
  sandboxId: string,
  o: {
    port?: number;
    method: string;
    path: string;
    body?: Buffer;
    headers?: Record<string, string | number>;
  },
  timeoutMs = 60_000,
): Promise<AgentReply> {
  const sock = await dialTunnel(vmmUrl, sandboxId, o.port ?? 49983);
  // The upgraded socket keeps the dial's 10 s idle timeout; a silent command may take longer.
  sock.setTimeout(0);
  let timer: NodeJS.Timeout | undefined;
  try {
    return await new Promise<AgentReply>((resolve, reject) => {
      const req = request(
        {
          createConnection: () => sock,
          host: "agent",
          method: o.method,
          path: o.path,
          headers: { ...(o.body ? { "content-length": o.body.length } : {}), ...o.headers },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
          res.on("error", reject);
        },
      );
      timer = setTimeout(
        () => req.destroy(new Error(`${o.method} ${o.path} timed out after ${timeoutMs} ms`)),
        timeoutMs,
      );
      req.on("error", reject);
      req.end(o.body);
    });
  } finally {
    clearTimeout(timer);
    sock.destroy();
  }
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Runs `bash -c script` as root through the agent's process.Process/Start (Connect JSON stream). */
export async function exec(
  vmmUrl: string,
  sandboxId: string,
  script: string,
  timeoutMs = 60_000,
): Promise<ExecResult> {
  const msg = Buffer.from(
    JSON.stringify({ process: { cmd: "/bin/bash", args: ["-c", script] }, stdin: false }),
  );
  const envelope = Buffer.alloc(5 + msg.length);
  envelope.writeUInt32BE(msg.length, 1);
  msg.copy(envelope, 5);
  const res = await tunnelRequest(
    vmmUrl,
    sandboxId,
    {
      method: "POST",
      path: "/process.Process/Start",
      body: envelope,
      headers: {
        "content-type": "application/connect+json",
        "connect-protocol-version": "1",
        "connect-timeout-ms": timeoutMs,
        authorization: `Basic ${Buffer.from("root:").toString("base64")}`,
      },
    },
    timeoutMs + 5_000,
  );
  if (res.status !== 200) throw new Error(`Start answered ${res.status}: ${res.body.toString()}`);
  const out: ExecResult = { stdout: "", stderr: "", exitCode: -1 };
  for (let off = 0; off + 5 <= res.body.length; ) {
    const flags = res.body[off] ?? 0;
    const len = res.body.readUInt32BE(off + 1);
    const frame = JSON.parse(res.body.subarray(off + 5, off + 5 + len).toString("utf8")) as {
      event?: { data?: { stdout?: string; stderr?: string }; end?: { exitCode?: number } };
      error?: { message?: string };
    };
    off += 5 + len;
    if (flags & 2) {
      if (frame.error) throw new Error(`Start stream failed: ${frame.error.message}`);
      continue;
    }
    const d = frame.event?.data;
    if (d?.stdout) out.stdout += Buffer.from(d.stdout, "base64").toString("utf8");
    if (d?.stderr) out.stderr += Buffer.from(d.stderr, "base64").toString("utf8");
    if (frame.event?.end) out.exitCode = frame.event.end.exitCode ?? 0;
  }
  return out;
}

/** Uploads one file through the agent's E2B `/files` route (multipart), as root. */
export async function writeGuestFile(vmmUrl: string, sandboxId: string, path: string, content: Buffer) {
  const boundary = `dnah${Date.now().toString(16)}`;
  const body = Buffer.concat([
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${path}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    ),
    content,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  const res = await tunnelRequest(vmmUrl, sandboxId, {
    method: "POST",
    path: `/files?path=${encodeURIComponent(path)}&username=root`,
    body,
    headers: { "content-type": `multipart/form-data; boundary=${boundary}` },
  });
  if (res.status !== 200) throw new Error(`POST /files answered ${res.status}: ${res.body.toString()}`);
}

export async function readGuestFile(vmmUrl: string, sandboxId: string, path: string): Promise<AgentReply> {
  return tunnelRequest(vmmUrl, sandboxId, {
    method: "GET",
    path: `/files?path=${encodeURIComponent(path)}&username=root`,
  });
}

export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
