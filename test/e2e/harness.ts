import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type DevStack, startDevStack } from "@dnah/cli";
import { silentLogger } from "@dnah/platform";
import { SandboxService } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
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
      ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
      ...extra,
    },
    silentLogger(),
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
