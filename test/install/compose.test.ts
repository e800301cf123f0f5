import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import { Ajv } from "ajv";
import pg from "pg";
import { parse } from "yaml";
import { REPO } from "./fixture.js";

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/**
 * The Compose Specification's JSON schema as shipped by dclint (a maintained Compose linter
 * whose schemas/compose.schema.json is compose-spec/compose-spec's schema/compose-spec.json).
 */
const SCHEMA_PATH = join(
  dirname(createRequire(import.meta.url).resolve("dclint/package.json")),
  "schemas/compose.schema.json",
);

interface Healthcheck {
  test: string[] | string;
}
interface Service {
  image: string;
  command?: string;
  environment?: Record<string, string>;
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: Healthcheck;
}
interface ComposeFile {
  services: Record<string, Service>;
}

async function loadCompose(): Promise<unknown> {
  return parse(await readFile(join(REPO, "docker-compose.yml"), "utf8"), { merge: true });
}

async function validator() {
  const schema = JSON.parse(await readFile(SCHEMA_PATH, "utf8")) as Record<string, unknown>;
  assert.equal(schema.title, "Compose Specification");
  const ajv = new Ajv({ allErrors: true, strict: false });
  // The schema names draft-07 by its https address; Ajv knows the meta-schema by the http one.
  const draft7 = createRequire(import.meta.url)("ajv/dist/refs/json-schema-draft-07.json") as Record<
    string,
    unknown
  >;
  if (schema.$schema === "https://json-schema.org/draft-07/schema")
    ajv.addMetaSchema({ ...draft7, $id: "https://json-schema.org/draft-07/schema" });
  return ajv.compile(schema);
}

/** Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}. */
function interpolate(value: string, vars: Record<string, string>): string {
  return value.replace(
    /\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}/g,
    (_m, name: string, op?: string, arg?: string) => {
      const v = vars[name];
      if (v !== undefined && v !== "") return v;
      if (op === "-") return arg ?? "";
      throw new Error(`\${${name}} is required: ${arg ?? ""}`);
    },
  );
}

describe("docker-compose.yml", () => {
  test("validates against the Compose Specification schema", async () => {
    const validate = await validator();
    const doc = await loadCompose();
    assert.ok(validate(doc), JSON.stringify(validate.errors, null, 2));
    // The validator does reject what Compose rejects (so the pass above means something).
    const broken = structuredClone(doc) as ComposeFile;
    (broken.services.scheduler as unknown as Record<string, unknown>).restart_policy = "always";
    broken.services.gateway = {
      ...broken.services.gateway!,
      depends_on: { scheduler: { condition: "service_ready" } },
    };
    assert.equal(validate(broken), false);
    const messages = (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
    assert.ok(messages.some((m) => m.includes("/services/scheduler") && m.includes("additional properties")));
    assert.ok(messages.some((m) => m.includes("/services/gateway/depends_on/scheduler/condition")));
  });

  test("every service has a health check; dependencies wait for health; the scheduler gets the join token", async () => {
    const { services } = (await loadCompose()) as ComposeFile;
    assert.deepEqual(Object.keys(services).sort(), ["gateway", "postgres", "scheduler", "snapshot"]);
    for (const [name, svc] of Object.entries(services)) {
      assert.ok(svc.healthcheck, `${name} has no healthcheck`);
      for (const [dep, cond] of Object.entries(svc.depends_on ?? {}))
        assert.equal(cond.condition, "service_healthy", `${name} -> ${dep}`);
    }
    const joinToken = services.scheduler?.environment?.DNAH_JOIN_TOKEN ?? "";
    assert.match(joinToken, /^\$\{DNAH_JOIN_TOKEN:\?/);
    assert.throws(() => interpolate(joinToken, {}), /required/);
  });

  describe("each service starts outside Docker with the same command", () => {
    const suffix = randomBytes(4).toString("hex");
    const schema = `compose_${suffix}`;
    const procs: ChildProcess[] = [];
    const tmpDirs: string[] = [];

    after(async () => {
      for (const p of procs.reverse()) {
        await new Promise<void>((resolve) => {
          if (p.exitCode !== null || p.signalCode !== null) return resolve();
          p.once("exit", () => resolve());
          p.kill("SIGTERM");
        });
      }
      for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
      const c = new pg.Client({ connectionString: DATABASE_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    });

    test("snapshot, scheduler and gateway each pass their own health check", async () => {
      const { services } = (await loadCompose()) as ComposeFile;
      const vars = { DNAH_JOIN_TOKEN: `join-${randomBytes(16).toString("hex")}` };
      // The container port of each service (its *_PORT setting) and a free one here.
      const base = 20_000 + randomInt(0, 20_000);
      const ports = new Map<string, [string, string]>();
      let i = 0;
      for (const [name, svc] of Object.entries(services)) {
        const port = Object.entries(svc.environment ?? {}).find(([k]) => k.endsWith("_PORT"))?.[1];
        if (name !== "postgres" && port) ports.set(name, [port, String(base + i++)]);
      }
      // Container names and ports become loopback ones; 0.0.0.0 binds stay on loopback here.
      const localize = (s: string, self?: string) => {
        let out = s;
        for (const [name, [inner, outer]] of ports) {
          out = out.replaceAll(`http://${name}:${inner}`, `http://127.0.0.1:${outer}`);
          if (name === self) out = out.replaceAll(`127.0.0.1:${inner}`, `127.0.0.1:${outer}`);
        }
        return out;
      };
      const started: string[] = [];
      const order = ["snapshot", "scheduler", "gateway"];
      for (const name of order) {
        const svc = services[name];
        assert.ok(svc, `no service ${name}`);
        for (const dep of Object.keys(svc.depends_on ?? {}))
          assert.ok(dep === "postgres" || started.includes(dep), `${name} starts before ${dep}`);
        assert.ok(svc.command, `${name} has no command`);
        const env: Record<string, string> = {
          PATH: `${dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin`,
          DNAH_LOG_LEVEL: "warn",
        };
        for (const [k, raw] of Object.entries(svc.environment ?? {})) {
          const v = interpolate(raw, vars);
          if (k === "DATABASE_URL") {
            assert.match(v, /^postgres:\/\/postgres:[^@]+@postgres:5432\/dnah$/);
            env[k] = DATABASE_URL;
            env.DNAH_DB_SCHEMA = schema;
          } else if (k.endsWith("_HOST") && v === "0.0.0.0") env[k] = "127.0.0.1";
          else if (k.endsWith("_PORT")) env[k] = ports.get(name)?.[1] ?? v;
          else env[k] = localize(v);
        }
        // Named volumes become temporary folders at the same settings.
        for (const vol of svc.volumes ?? []) {
          const [source = "", target = ""] = vol.split(":");
          if (source === "." || target === "") continue;
          const dir = await mkdtemp(join(tmpdir(), `dnah-compose-${source}-`));
          tmpDirs.push(dir);
          for (const [k, v] of Object.entries(env))
            if (v.startsWith(target)) env[k] = dir + v.slice(target.length);
        }
        const [cmd = "", ...args] = svc.command.split(/\s+/);
        const p = spawn(cmd, args, { cwd: REPO, env, stdio: ["ignore", "ignore", "pipe"] });
        procs.push(p);
        let stderr = "";
        p.stderr?.on("data", (d: Buffer) => {
          stderr = (stderr + d.toString()).slice(-4096);
        });
        const exited = new Promise<never>((_, reject) =>
          p.once("exit", (code) =>
            reject(new Error(`${name} exited (${code}) before it was healthy:\n${stderr}`)),
          ),
        );
        exited.catch(() => {});
        const test = svc.healthcheck?.test;
        assert.ok(Array.isArray(test) && test[0] === "CMD", `${name}: healthcheck test must be ["CMD", ...]`);
        const [hcCmd = "", ...hcArgs] = test.slice(1).map((a) => localize(a, name));
        const t0 = Date.now();
        let healthy = false;
        while (!healthy) {
          if (Date.now() - t0 > 60_000) throw new Error(`${name} not healthy within 60 s`);
          healthy = await Promise.race([
            new Promise<boolean>((resolve) => {
              const hc = spawn(hcCmd, hcArgs, { env, stdio: "ignore" });
              hc.once("exit", (code) => resolve(code === 0));
              hc.once("error", () => resolve(false));
            }),
            exited,
          ]);
          if (!healthy) await new Promise((r) => setTimeout(r, 300));
        }
        console.log(`# ${name}: '${svc.command}' healthy after ${Date.now() - t0} ms`);
        started.push(name);
      }
      // The gateway reached through the compose wiring: its health route, and the scheduler
      // it was pointed at by service name.
      const gw = `http://127.0.0.1:${ports.get("gateway")?.[1]}`;
      assert.deepEqual(await (await fetch(`${gw}/health`)).json(), { status: "ok" });
      const c = new pg.Client({ connectionString: DATABASE_URL });
      await c.connect();
      try {
        const tables = await c.query(
          "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'hosts'",
          [schema],
        );
        assert.equal(tables.rowCount, 1, "the scheduler migrated its schema");
      } finally {
        await c.end();
      }
    });
  });
});
