import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type DevStack, startDevStack } from "@dnah/cli";
import { createLogger, silentLogger } from "@dnah/platform";
import { SandboxService } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { createScheduler, configFromEnv as schedulerConfig } from "@dnah/scheduler";
import pg from "pg";

export const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

export interface TestStack extends DevStack {
  readonly key: string;
  readonly stateDir: string;
  readonly cgroupParent: string;
  /** fetch against the gateway with the API key. */
  api(path: string, init?: RequestInit): Promise<Response>;
  json<T = Record<string, unknown>>(
    path: string,
    init?: RequestInit & { body?: string },
  ): Promise<{ status: number; body: T }>;
}

/** The whole dnah stack in this process: real Postgres (own schema), real jail sandboxes. */
export async function startTestStack(extra: Record<string, string> = {}): Promise<TestStack> {
  const suffix = randomBytes(4).toString("hex");
  const schema = `e2e_${suffix}`;
  const key = `dnah_test${randomBytes(16).toString("hex")}`;
  const stateDir = `/tmp/dnah-e2e-${suffix}`;
  const cgroupParent = `dnah-e2e-${suffix}`;
  const stack = await startDevStack(
    {
      DATABASE_URL,
      DNAH_DB_SCHEMA: schema,
      DNAH_API_KEY: key,
      DNAH_PORT: "0",
      DNAH_GATEWAY_HOST: "127.0.0.1",
      DNAH_STATE_DIR: stateDir,
      DNAH_CGROUP_PARENT: cgroupParent,
      DNAH_POOL_SIZE: "2",
      DNAH_HOST_ID: `e2e-${suffix}`,
      // Streams a test leaves open (watch, exec) are cut 2 s into close, not after a production drain's 10 s.
      DNAH_SHUTDOWN_TIMEOUT_MS: "2000",
      ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
      ...extra,
    },
    // DNAH_TEST_LOG=debug|info|warn shows the stack's logs when a test needs explaining.
    process.env.DNAH_TEST_LOG
      ? createLogger("e2e", { level: process.env.DNAH_TEST_LOG as "debug" })
      : silentLogger(),
  );
  const api = (path: string, init: RequestInit = {}) =>
    fetch(stack.url + path, {
      ...init,
      headers: { authorization: `Bearer ${key}`, ...(init.headers as Record<string, string>) },
    });
  return Object.assign(Object.create(null), stack, {
    key,
    stateDir,
    cgroupParent,
    api,
    close: async () => {
      await stack.close();
      await rm(stateDir, { recursive: true, force: true });
      const c = new pg.Client({ connectionString: DATABASE_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    },
    async json(path: string, init: RequestInit = {}) {
      const res = await api(path, {
        ...init,
        headers: {
          ...(init.body !== undefined ? { "content-type": "application/json" } : {}),
          ...(init.headers as Record<string, string>),
        },
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    },
  }) as TestStack;
}

/** Waits until fn() is truthy (pool refills happen in the background). */
export async function eventually<T>(
  fn: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until `url` answers 2xx (a service started as its own process is up). */
export async function waitForHttp(url: string, timeoutMs = 60_000): Promise<void> {
  await eventually(
    () =>
      fetch(url).then(
        (r) => r.ok,
        () => false,
      ),
    timeoutMs,
  );
}

/** Services run as their own processes (`services/<name>/src/main.ts`), on one schema. */
export interface ServiceProcesses {
  readonly procs: Map<string, ChildProcess>;
  /** Starts (or starts again) one service with the common env plus `env`. */
  start(service: string, env: Record<string, string>): ChildProcess;
  /** Waits until something listens at `url` (any answer will do). */
  listening(url: string): Promise<void>;
  /** SIGTERMs the running ones, gateway → vmm → snapshot → scheduler, each waited for. */
  stop(): Promise<void>;
}

/**
 * Each service from its own main.ts, wired only by URLs: how docker-compose and a multi-host
 * install run them. Their stderr is the test's; stdout is dropped.
 */
export function serviceProcesses(schema: string, logLevel = "warn"): ServiceProcesses {
  const procs = new Map<string, ChildProcess>();
  const common = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    DATABASE_URL,
    DNAH_DB_SCHEMA: schema,
    DNAH_LOG_LEVEL: logLevel,
    ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
  };
  return {
    procs,
    start(service, env) {
      const p = spawn(process.execPath, ["--import", "tsx", `services/${service}/src/main.ts`], {
        env: { ...common, ...env },
        stdio: ["ignore", "ignore", "inherit"],
      });
      procs.set(service, p);
      return p;
    },
    listening: (url) =>
      eventually(() =>
        fetch(url).then(
          () => true,
          () => false,
        ),
      ).then(() => undefined),
    async stop() {
      for (const name of ["gateway", "vmm", "snapshot", "scheduler"]) {
        const p = procs.get(name);
        if (p === undefined || p.exitCode !== null || p.signalCode !== null) continue;
        await new Promise<void>((resolve) => {
          p.once("exit", () => resolve());
          p.kill("SIGTERM");
        });
      }
    },
  };
}

/** A Connect client for the native SandboxService that sends the stack's API key. */
export function sandboxClient(s: Pick<TestStack, "url" | "key">): Client<typeof SandboxService> {
  return createClient(
    SandboxService,
    createConnectTransport({
      baseUrl: s.url,
      httpVersion: "1.1",
      interceptors: [
        (next) => (req) => {
          req.header.set("authorization", `Bearer ${s.key}`);
          return next(req);
        },
      ],
    }),
  );
}

/** A scheduler reaper whose clock the test moves: minutes and days pass in an instant. */
export interface MovedReaper {
  /** How far ahead of the wall clock this reaper's clock runs (ms); tests set it. */
  skewMs: number;
  /** One reaper pass (stop, archive, delete) at the wall clock + skewMs. */
  runOnce(): Promise<{ stop: number; archive: number; delete: number; failed: number }>;
  close(): Promise<void>;
}

/**
 * The scheduler's own reaper code on the stack's database, as a second replica that never
 * listens or refills (the stack's scheduler keeps reaping on real time; replicas never act
 * twice on one row). Its clock is the wall clock moved by `skewMs`.
 */
export function movedReaper(s: Pick<TestStack, "db" | "snapshotUrl">): MovedReaper {
  const moved: MovedReaper = {
    skewMs: 0,
    runOnce: () => scheduler.reaper.runOnce(),
    close: () => scheduler.close(),
  };
  const scheduler = createScheduler(
    schedulerConfig({ DATABASE_URL, DNAH_SNAPSHOT_URL: s.snapshotUrl, DNAH_SCHEDULER_PORT: "0" }),
    { db: s.db, logger: silentLogger(), clock: { now: () => Date.now() + moved.skewMs } },
  );
  return moved;
}
