/**
 * A stand-in for the `cloud-hypervisor` binary, for tests on hosts where no real Cloud
 * Hypervisor (or KVM) exists. It is NOT a hypervisor and runs no guest: it serves CH's REST
 * API on `--api-socket`, validates every request against the vendored upstream OpenAPI
 * document, enforces CH's VM state machine and per-release status codes, and does the
 * host-side effects a real CH has (serial file created at vm.create; kernel, disks, TAP and
 * virtio-fs socket checked and the hybrid-vsock socket bound at vm.boot / vm.restore;
 * snapshot files written; sockets removed on exit). A host `CONNECT <port>` on the vsock
 * socket is closed without `OK`, as CH does when nothing listens on that guest port.
 *
 * Environment (set by a test's wrapper script; the runtime passes CH only PATH):
 *   CH_STANDIN_VERSION  crate version to report and behave as (default 53.0.0)
 *   CH_STANDIN_RECORD   append one JSON line per request here (method, endpoint, status,
 *                       violations) so a test can fail on any contract violation
 */
import { appendFileSync, existsSync, readFileSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { open, truncate } from "node:fs/promises";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { ChSchema } from "./schema.js";
import {
  type Effect,
  errorResponse,
  type Failure,
  isFailure,
  transition,
  type Version,
  type VmState,
} from "./state.js";

const USAGE =
  "usage: cloud-hypervisor --api-socket [path=]<path> [-v]... [--seccomp <v>] [--log-file <p>] | -V";

interface VmConfigLike {
  payload: { kernel?: string; initramfs?: string };
  memory?: { size: number; shared?: boolean };
  disks?: Array<{ path?: string; id?: string; readonly?: boolean }>;
  net?: Array<{ tap?: string; id?: string }>;
  fs?: Array<{ socket: string; id?: string }>;
  vsock?: { socket: string };
  serial?: { mode: string; file?: string };
}

const versionText = process.env.CH_STANDIN_VERSION ?? "53.0.0";
const vm = /^(\d+)\.(\d+)/.exec(versionText);
if (!vm) {
  process.stderr.write(`CH_STANDIN_VERSION ${versionText} is not a version\n`);
  process.exit(2);
}
const version: Version = { major: Number(vm[1]), minor: Number(vm[2]) };
const recordFile = process.env.CH_STANDIN_RECORD;

function parseArgs(argv: string[]): { apiSocket: string } {
  let apiSocket: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "-V" || a === "--version") {
      process.stdout.write(`cloud-hypervisor v${versionText} (dnah test stand-in, no hypervisor)\n`);
      process.exit(0);
    } else if (a === "--api-socket") {
      const v = argv[++i] ?? "";
      apiSocket = v.startsWith("path=") ? v.slice(5).split(",")[0] : v;
    } else if (/^-v+$/.test(a)) {
      // verbosity: accepted
    } else if (a === "--seccomp" || a === "--log-file") {
      i++;
    } else {
      process.stderr.write(
        `error: unexpected argument '${a}' (the stand-in only runs in API mode)\n${USAGE}\n`,
      );
      process.exit(1);
    }
  }
  if (!apiSocket) {
    process.stderr.write(`error: --api-socket is required\n${USAGE}\n`);
    process.exit(1);
  }
  return { apiSocket };
}

const log = (msg: string) => process.stderr.write(`cloud-hypervisor-standin[${process.pid}]: ${msg}\n`);

class StandIn {
  state: VmState | undefined;
  config: VmConfigLike | undefined;
  private vsock: Server | undefined;
  private vsockPath: string | undefined;
  private readonly schema = new ChSchema();

  constructor(readonly apiSocket: string) {}

  /** Validates, moves the state machine, performs the effect; returns status + body. */
  async handle(method: string, endpoint: string, raw: Buffer, headers: IncomingMessage["headers"]) {
    const violations: string[] = [];
    const spec = this.schema.request(method, endpoint);
    const result = await this.decide(method, endpoint, raw, headers, spec, violations);
    this.record(method, endpoint, result.status, violations);
    return result;
  }

  private async decide(
    method: string,
    endpoint: string,
    raw: Buffer,
    headers: IncomingMessage["headers"],
    spec: ReturnType<ChSchema["request"]>,
    violations: string[],
  ): Promise<{ status: number; body: string }> {
    const fail = (f: Failure) => errorResponse(f, version);
    if (!spec) {
      const known = this.schema.request(method === "GET" ? "put" : "get", endpoint);
      violations.push(known ? `wrong method ${method} for ${endpoint}` : `unknown endpoint ${endpoint}`);
      return fail(known ? { status: 400, chain: ["Bad Request"] } : { status: 404, chain: ["Not Found"] });
    }
    if (headers["transfer-encoding"]) {
      violations.push("chunked request body: CH reads bodies by Content-Length only");
      return fail({ status: 400, chain: ["Bad Request", "chunked bodies are not decoded"] });
    }
    const maxBody = version.major > 53 ? 4 * 1024 * 1024 : 50 * 1024;
    if (raw.length > maxBody) {
      violations.push(`request body of ${raw.length} bytes exceeds ${maxBody}`);
      return fail({ status: 400, chain: ["Bad Request", "body too large"] });
    }
    let body: unknown;
    if (spec.schema) {
      if (raw.length === 0) {
        violations.push(`${endpoint}: missing request body`);
        return fail({ status: 400, chain: ["Bad Request", "missing body"] });
      }
      if (!String(headers["content-type"] ?? "").startsWith("application/json"))
        violations.push(`${endpoint}: Content-Type is not application/json`);
      try {
        body = JSON.parse(raw.toString("utf8"));
      } catch (err) {
        violations.push(`${endpoint}: body is not JSON`);
        return fail({ status: 400, chain: ["Bad Request", (err as Error).message] });
      }
      const problems = this.schema.validate(spec.schema, body);
      if (problems.length > 0) {
        violations.push(...problems.map((p) => `${endpoint} ${spec.schema} ${p}`));
        return fail({ status: 400, chain: ["Bad Request", `Error parsing ${spec.schema}`, ...problems] });
      }
    } else if (raw.length > 0) {
      violations.push(`${endpoint} takes no body`);
    }

    const resume = (body as { resume?: boolean } | undefined)?.resume === true;
    const step = transition(endpoint, this.state, version, { resume });
    if (isFailure(step)) return fail(step);
    try {
      const answer = await this.apply(step.effect, endpoint, body);
      this.state = step.next;
      if (step.next === undefined) this.config = undefined;
      return answer;
    } catch (err) {
      return fail({
        status: 500,
        chain: ["Error from API", `The VM could not ${endpoint.slice(3)}`, (err as Error).message],
      });
    }
  }

  private async apply(
    effect: Effect,
    endpoint: string,
    body: unknown,
  ): Promise<{ status: number; body: string }> {
    switch (effect) {
      case "store-config": {
        const cfg = body as VmConfigLike;
        // CH creates (truncates) a File serial at vm.create.
        if (cfg.serial?.mode === "File" && cfg.serial.file) writeFileSync(cfg.serial.file, "");
        this.config = cfg;
        break;
      }
      case "start-devices":
        await this.startDevices(this.config!);
        break;
      case "stop-devices":
        this.stopDevices();
        break;
      case "write-snapshot":
        await this.writeSnapshot((body as { destination_url: string }).destination_url);
        break;
      case "restore-devices": {
        const cfg = this.readSnapshot((body as { source_url: string }).source_url);
        if (cfg.serial?.mode === "File" && cfg.serial.file) writeFileSync(cfg.serial.file, "");
        await this.startDevices(cfg);
        this.config = cfg;
        break;
      }
      case "exit":
        // After the 204 is on its way, like CH's VMM thread ending after the answer.
        setTimeout(() => this.exit(0), 20);
        break;
      case "none":
        break;
    }
    if (endpoint === "vmm.ping")
      return this.json({
        build_version: `v${versionText}-standin`,
        version: versionText,
        pid: process.pid,
        features: [],
      });
    if (endpoint === "vm.info") return this.json({ config: this.config, state: this.state });
    if (endpoint === "vm.counters") return this.json(this.counters());
    return { status: 204, body: "" };
  }

  private json(o: unknown) {
    return { status: 200, body: JSON.stringify(o) };
  }

  private counters(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const d of this.config?.disks ?? [])
      out[d.id ?? "_disk0"] = { read_bytes: 0, write_bytes: 0, read_ops: 0, write_ops: 0 };
    for (const n of this.config?.net ?? [])
      out[n.id ?? "_net0"] = { rx_bytes: 0, tx_bytes: 0, rx_frames: 0, tx_frames: 0 };
    return out;
  }

  /** What CH does at vm.boot / vm.restore before starting vCPUs (minus the guest). */
  private async startDevices(cfg: VmConfigLike): Promise<void> {
    for (const f of [cfg.payload.kernel, cfg.payload.initramfs])
      if (f !== undefined && !existsSync(f))
        throw new Error(`Cannot open kernel or initramfs ${f}: No such file or directory`);
    for (const d of cfg.disks ?? [])
      if (d.path && !existsSync(d.path))
        throw new Error(`Failed to open disk image ${d.path}: No such file or directory`);
    for (const n of cfg.net ?? [])
      if (n.tap && !existsSync(`/sys/class/net/${n.tap}`))
        throw new Error(`Failed to open TAP ${n.tap}: it does not exist in this network namespace`);
    for (const f of cfg.fs ?? []) {
      if (cfg.memory?.shared !== true)
        throw new Error("Using vhost-user requires shared memory or huge pages");
      await probeSocket(f.socket);
    }
    if (cfg.vsock) await this.bindVsock(cfg.vsock.socket);
  }

  private bindVsock(path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      // CH binds without unlinking: a stale socket file fails the boot (EADDRINUSE).
      const server = createServer((sock: Socket) => {
        let line = "";
        sock.on("data", (c: Buffer) => {
          line += c.toString("latin1");
          if (line.includes("\n") || line.length > 32) sock.destroy(); // no guest listens: EOF, no OK
        });
        sock.on("error", () => {});
      });
      server.once("error", (err) => reject(new Error(`Error creating vsock device: ${err.message}`)));
      server.listen(path, () => {
        this.vsock = server;
        this.vsockPath = path;
        resolve();
      });
    });
  }

  stopDevices(): void {
    this.vsock?.close();
    if (this.vsockPath) rmQuiet(this.vsockPath);
    this.vsock = undefined;
    this.vsockPath = undefined;
  }

  private async writeSnapshot(url: string): Promise<void> {
    const dir = urlToPath(url);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${dir} is not a directory`);
    for (const f of ["config.json", "state.json", "memory-ranges"]) {
      const fh = await open(join(dir, f), "wx").catch((err: Error) => {
        throw new Error(`Failed to create ${f}: ${err.message}`);
      });
      await fh.close();
    }
    writeFileSync(join(dir, "config.json"), JSON.stringify(this.config, null, 2));
    writeFileSync(
      join(dir, "state.json"),
      JSON.stringify({ standin: true, note: "dnah CH stand-in: no guest state", version: versionText }),
    );
    // Sized like guest RAM, but sparse: the stand-in has no guest memory to save.
    await truncate(join(dir, "memory-ranges"), this.config?.memory?.size ?? 0);
  }

  private readSnapshot(url: string): VmConfigLike {
    const dir = urlToPath(url);
    for (const f of ["config.json", "state.json", "memory-ranges"])
      if (!existsSync(join(dir, f))) throw new Error(`Failed to restore: ${join(dir, f)} is missing`);
    const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as VmConfigLike;
    const problems = this.schema.validate("VmConfig", cfg);
    if (problems.length > 0) {
      this.record("PUT", "vm.restore(config.json)", 500, problems);
      throw new Error(`invalid config.json: ${problems.join("; ")}`);
    }
    return cfg;
  }

  record(method: string, endpoint: string, status: number, violations: string[]): void {
    if (violations.length > 0) log(`contract violation on ${method} ${endpoint}: ${violations.join("; ")}`);
    if (!recordFile) return;
    appendFileSync(
      recordFile,
      `${JSON.stringify({ pid: process.pid, method, endpoint, status, violations })}\n`,
    );
  }

  exit(code: number): never {
    this.stopDevices();
    rmQuiet(this.apiSocket);
    process.exit(code);
  }
}

function urlToPath(url: string): string {
  if (!url.startsWith("file://")) throw new Error(`unsupported URL ${url}: only file:// is supported`);
  return url.slice("file://".length);
}

function rmQuiet(p: string): void {
  try {
    unlinkSync(p);
  } catch {
    // already gone
  }
}

function probeSocket(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve();
    });
    s.once("error", (err) =>
      reject(new Error(`Failed to connect to vhost-user socket ${path}: ${err.message}`)),
    );
  });
}

function main(): void {
  const { apiSocket } = parseArgs(process.argv.slice(2));
  const vmm = new StandIn(apiSocket);
  if (existsSync(apiSocket)) {
    // v53+ takes a lock and removes a stale socket; older releases fail to bind.
    if (version.major >= 53) rmQuiet(apiSocket);
    else {
      log(`Error binding to API socket ${apiSocket}: Address in use`);
      process.exit(1);
    }
  }
  let open = 0;
  const server = createHttpServer({ keepAlive: true }, (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const url = req.url ?? "";
      const endpoint = url.startsWith("/api/v1/") ? url.slice("/api/v1/".length) : `(outside /api/v1) ${url}`;
      vmm.handle(req.method ?? "", endpoint, Buffer.concat(chunks), req.headers).then(
        ({ status, body }) => {
          res.writeHead(status, body ? { "Content-Type": "application/json" } : {});
          res.end(body);
        },
        (err: Error) => {
          log(`internal stand-in error: ${err.stack ?? err.message}`);
          res.writeHead(500);
          res.end(JSON.stringify(["stand-in error", err.message]));
        },
      );
    });
  });
  server.on("connection", (sock: Socket) => {
    open++;
    sock.once("close", () => open--);
    if (open > 10) {
      // micro_http's MAX_CONNECTIONS: an 11th connection gets 503 and is dropped.
      const body = '{ "error": "Too many open connections" }';
      sock.end(
        `HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      vmm.record("-", "(connection)", 503, ["more than 10 concurrent API connections"]);
    }
  });
  server.listen(apiSocket, () => log(`API on ${apiSocket}, behaving as v${versionText}`));
  for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => vmm.exit(0));
}

main();
