import { Agent, request } from "node:http";
import type {
  RestoreConfig,
  VmConfig,
  VmCounters,
  VmInfo,
  VmmPingResponse,
  VmSnapshotConfig,
} from "./types.js";
import { type ChFeatures, type ChVersion, featuresOf, parseChVersion } from "./version.js";

/**
 * A thin client for one Cloud Hypervisor process's REST API on its unix socket
 * (`http://localhost/api/v1/<endpoint>`, spec §1.1–1.3).
 *
 * - One kept-alive connection (CH serves one request at a time and answers an 11th
 *   connection with 503), so calls queue here rather than in CH.
 * - Bodies always carry Content-Length: CH's HTTP server never decodes chunked bodies.
 * - Every call has a timeout; RAM-sized calls (snapshot, restore) take a larger one.
 * - Failures throw `ChApiError` whose message and `cause` chain carry CH's error chain.
 */

const API_ROOT = "/api/v1";
const DEFAULT_TIMEOUT_MS = 10_000;
/** CH's answers are small (vm.info is the largest); anything bigger is not CH. */
const MAX_RESPONSE_BYTES = 1024 * 1024;
/** v53.0's request body limit (micro_http's default); newer releases allow 4 MiB. */
export const MAX_REQUEST_BYTES = 50 * 1024;

/** A non-2xx answer from CH. `messages` is its error chain, top error first. */
export class ChApiError extends Error {
  constructor(
    readonly endpoint: string,
    readonly status: number,
    readonly messages: readonly string[],
    /** True when CH said the VM is not created (404 from v53, a 500 naming it before). */
    readonly notCreated: boolean,
  ) {
    super(
      `cloud-hypervisor ${endpoint} failed (HTTP ${status})${messages.length > 0 ? `: ${messages.join(": ")}` : ""}`,
      { cause: chainToCause(messages) },
    );
    this.name = "ChApiError";
  }
}

/** CH did not answer at all: no socket, connection refused or reset, or no answer in time. */
export class ChUnreachableError extends Error {
  constructor(
    readonly endpoint: string,
    message: string,
    readonly timedOut: boolean,
    options?: ErrorOptions,
  ) {
    super(`cloud-hypervisor ${endpoint}: ${message}`, options);
    this.name = "ChUnreachableError";
  }
}

/** Turns ["top", "middle", "root"] into Error("middle", {cause: Error("root")}). */
function chainToCause(messages: readonly string[]): Error | undefined {
  let cause: Error | undefined;
  for (const m of [...messages.slice(1)].reverse()) cause = new Error(m, cause ? { cause } : undefined);
  return cause;
}

/**
 * CH's error body: a JSON array of strings from v47, plain text (the top error's Display)
 * before. Anything unexpected is kept as one message rather than dropped.
 */
export function parseErrorBody(body: string, features: ChFeatures | undefined): string[] {
  const text = body.trim();
  if (text === "") return [];
  if (features?.jsonErrorBodies !== false && text.startsWith("[")) {
    try {
      const arr = JSON.parse(text) as unknown;
      if (Array.isArray(arr) && arr.every((m) => typeof m === "string")) return arr as string[];
    } catch {
      // not JSON after all: fall through to plain text
    }
  }
  // micro_http's own errors (503 "Too many open connections") are a JSON object.
  if (text.startsWith("{")) {
    try {
      const o = JSON.parse(text) as { error?: unknown };
      if (typeof o.error === "string") return [o.error];
    } catch {
      // plain text
    }
  }
  return [text.slice(0, 2000)];
}

export interface ChApiOptions {
  /** Default per-call timeout. */
  readonly timeoutMs?: number;
}

export class ChApiClient {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 1 });
  private readonly timeoutMs: number;
  private ver: ChVersion | undefined;

  constructor(
    readonly socketPath: string,
    opts: ChApiOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** The version the last `ping` reported (undefined before the first ping). */
  get version(): ChVersion | undefined {
    return this.ver;
  }

  get features(): ChFeatures | undefined {
    return this.ver && featuresOf(this.ver);
  }

  /** `GET vmm.ping`; remembers the version for error parsing and feature gates. */
  async ping(timeoutMs?: number): Promise<VmmPingResponse> {
    const res = (await this.call("GET", "vmm.ping", undefined, timeoutMs)) as VmmPingResponse | undefined;
    if (!res || typeof res.version !== "string")
      throw new ChUnreachableError("vmm.ping", "answer has no version: not a cloud-hypervisor API", false);
    this.ver = parseChVersion(res.version);
    if (!this.ver)
      throw new ChUnreachableError("vmm.ping", `unparseable version ${JSON.stringify(res.version)}`, false);
    return res;
  }

  async info(): Promise<VmInfo> {
    return (await this.call("GET", "vm.info")) as VmInfo;
  }

  async counters(): Promise<VmCounters> {
    return ((await this.call("GET", "vm.counters")) ?? {}) as VmCounters;
  }

  async create(config: VmConfig): Promise<void> {
    await this.call("PUT", "vm.create", config);
  }

  async boot(): Promise<void> {
    await this.call("PUT", "vm.boot");
  }

  async pause(): Promise<void> {
    await this.call("PUT", "vm.pause");
  }

  async resume(): Promise<void> {
    await this.call("PUT", "vm.resume");
  }

  async snapshot(body: VmSnapshotConfig, timeoutMs: number): Promise<void> {
    await this.call("PUT", "vm.snapshot", body, timeoutMs);
  }

  async restore(body: RestoreConfig, timeoutMs: number): Promise<void> {
    await this.call("PUT", "vm.restore", body, timeoutMs);
  }

  /** Stops the guest; CH keeps the config (`vm.info` says Created again). */
  async shutdown(): Promise<void> {
    await this.call("PUT", "vm.shutdown");
  }

  /** Shuts the guest down if needed and drops the config; idempotent. */
  async delete(): Promise<void> {
    await this.call("PUT", "vm.delete");
  }

  /** Deletes the VM and makes the CH process exit. */
  async shutdownVmm(timeoutMs?: number): Promise<void> {
    await this.call("PUT", "vmm.shutdown", undefined, timeoutMs);
  }

  close(): void {
    this.agent.destroy();
  }

  private call(
    method: "GET" | "PUT",
    endpoint: string,
    body?: unknown,
    timeoutMs?: number,
  ): Promise<unknown> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    if (payload && payload.length > MAX_REQUEST_BYTES)
      return Promise.reject(
        new ChUnreachableError(
          endpoint,
          `request body of ${payload.length} bytes exceeds ${MAX_REQUEST_BYTES}`,
          false,
        ),
      );
    const limit = timeoutMs ?? this.timeoutMs;
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const headers: Record<string, string | number> = { Host: "localhost", Accept: "application/json" };
      if (payload) {
        headers["Content-Type"] = "application/json";
        headers["Content-Length"] = payload.length;
      } else if (method === "PUT") {
        headers["Content-Length"] = 0;
      }
      const req = request(
        { socketPath: this.socketPath, agent: this.agent, method, path: `${API_ROOT}/${endpoint}`, headers },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            size += c.length;
            if (size > MAX_RESPONSE_BYTES) {
              req.destroy();
              settle(() =>
                reject(
                  new ChUnreachableError(endpoint, `answer larger than ${MAX_RESPONSE_BYTES} bytes`, false),
                ),
              );
              return;
            }
            chunks.push(c);
          });
          res.on("error", (err) =>
            settle(() => reject(new ChUnreachableError(endpoint, err.message, false, { cause: err }))),
          );
          res.on("end", () =>
            settle(() => {
              const status = res.statusCode ?? 0;
              const text = Buffer.concat(chunks).toString("utf8");
              if (status >= 200 && status < 300) {
                if (text.trim() === "") return resolve(undefined);
                try {
                  resolve(JSON.parse(text));
                } catch {
                  reject(
                    new ChUnreachableError(endpoint, `HTTP ${status} with a body that is not JSON`, false),
                  );
                }
                return;
              }
              const messages = parseErrorBody(text, this.features);
              reject(new ChApiError(endpoint, status, messages, this.isNotCreated(status, messages)));
            }),
          );
        },
      );
      const timer = setTimeout(() => {
        req.destroy();
        settle(() => reject(new ChUnreachableError(endpoint, `no answer within ${limit} ms`, true)));
      }, limit);
      req.on("error", (err) =>
        settle(() => reject(new ChUnreachableError(endpoint, err.message, false, { cause: err }))),
      );
      req.end(payload);
    });
  }

  private isNotCreated(status: number, messages: readonly string[]): boolean {
    if (this.features?.notCreatedIs404 && status === 404) return true;
    // Before v53 the same condition was a 500; its chain names it.
    return status === 500 && messages.some((m) => /not created|VmNotCreated|missing.*config/i.test(m));
  }
}
