import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";

/**
 * The one database handle every service takes: a pg pool against Postgres, or an embedded
 * PGlite for `dnah dev` without DATABASE_URL. Both speak the same SQL.
 */
export interface Db {
  query<R extends object = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<{ rows: R[] }>;
  /** Runs fn in one transaction on one connection; rolls back if it throws. */
  transaction<T>(fn: (tx: Pick<Db, "query">) => Promise<T>): Promise<T>;
  close(): Promise<void>;
  readonly kind: "postgres" | "pglite";
}

export interface DbOptions {
  /** A postgres:// URL; without it an embedded PGlite is used. */
  url?: string | undefined;
  /** PGlite data directory; in-memory when unset. */
  pgliteDir?: string | undefined;
  /** Every connection's search_path (tests give each suite its own schema). */
  schema?: string | undefined;
  maxConnections?: number;
}

export async function openDb(opts: DbOptions): Promise<Db> {
  if (opts.url) return openPostgres(opts.url, opts.schema, opts.maxConnections ?? 10);
  return openPglite(opts.pgliteDir, opts.schema);
}

/**
 * The database could not be reached, or the connection broke under the call (Postgres down,
 * restarting, or crashed mid-query). Nothing the caller did wrong: retrying later may work.
 * Services report it as `unavailable`; `cause` is the driver's error.
 */
export class DatabaseUnavailableError extends Error {
  constructor(options: { cause: unknown }) {
    super("the database is unavailable; retry shortly", options);
    this.name = "DatabaseUnavailableError";
  }
}

/** Socket-level errors of a connection that could not be made or broke. */
const LOST_SOCKET = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/**
 * Whether a pg error means "no database right now" rather than "this query is wrong" (pure):
 * a socket error, SQLSTATE class 08 (connection exception), 57P01–57P03 (shut down, crashed,
 * still starting), or pg's own messages for a connection that ended or never came up.
 */
export function isConnectionError(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const code = String((err as { code?: unknown }).code ?? "");
  if (LOST_SOCKET.has(code) || code.startsWith("08") || /^57P0[123]$/.test(code)) return true;
  const message = String((err as { message?: unknown }).message ?? "");
  return /^Connection terminated|^timeout exceeded when trying to connect|is not queryable|^Connection ended/.test(
    message,
  );
}

function unavailableOr(err: unknown): unknown {
  return isConnectionError(err) ? new DatabaseUnavailableError({ cause: err }) : err;
}

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

function checkSchema(schema: string): string {
  if (!SCHEMA_RE.test(schema)) throw new Error(`invalid schema name ${JSON.stringify(schema)}`);
  return schema;
}

async function openPostgres(url: string, schema: string | undefined, max: number): Promise<Db> {
  if (schema) {
    checkSchema(schema);
    const setup = new pg.Client({ connectionString: url });
    await setup.connect();
    try {
      await setup.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    } finally {
      await setup.end();
    }
  }
  const pool = new pg.Pool({
    connectionString: url,
    max,
    ...(schema ? { options: `-c search_path=${schema}` } : {}),
  });
  // A broken idle connection must not crash the process; the pool replaces it.
  pool.on("error", () => {});
  return {
    kind: "postgres",
    async query(sql, params) {
      try {
        const res = await pool.query(sql, params as unknown[]);
        return { rows: res.rows };
      } catch (err) {
        throw unavailableOr(err);
      }
    },
    async transaction(fn) {
      const client = await pool.connect().catch((err: unknown) => {
        throw unavailableOr(err);
      });
      // Checked out, the client has no pool listener: a connection that breaks while `fn`
      // awaits something else (Postgres restarting) would be an unhandled 'error' event and
      // end the process. Its queries fail instead, and the release below discards it.
      let broken: unknown;
      const onError = (err: unknown) => {
        broken = err;
      };
      client.on("error", onError);
      try {
        await client.query("BEGIN");
        const out = await fn({
          query: async (sql, params) => ({ rows: (await client.query(sql, params as unknown[])).rows }),
        });
        await client.query("COMMIT");
        return out;
      } catch (err) {
        if (isConnectionError(err)) broken ??= err;
        else await client.query("ROLLBACK").catch(() => {});
        throw unavailableOr(err);
      } finally {
        client.off("error", onError);
        client.release(broken === undefined ? undefined : (broken as Error));
      }
    },
    close: () => pool.end(),
  };
}

async function openPglite(dir: string | undefined, schema: string | undefined): Promise<Db> {
  const lite = new PGlite(dir);
  await lite.waitReady;
  if (schema) {
    checkSchema(schema);
    await lite.exec(`CREATE SCHEMA IF NOT EXISTS ${schema}; SET search_path TO ${schema};`);
  }
  return {
    kind: "pglite",
    async query(sql, params) {
      const res = await lite.query(sql, params as unknown[]);
      return { rows: res.rows as never[] };
    },
    transaction(fn) {
      return lite.transaction((tx) =>
        fn({
          query: async (sql, params) => ({
            rows: (await tx.query(sql, params as unknown[])).rows as never[],
          }),
        }),
      );
    },
    close: () => lite.close(),
  };
}

/**
 * Applies `NNNN_name.sql` files from `dir` in order, once each, recording them per service in
 * `dnah_migrations`. Each file runs in its own transaction; concurrent starters serialise on
 * an advisory lock.
 */
export async function migrate(db: Db, service: string, dir: string): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f)).sort();
  const applied: string[] = [];
  await db.transaction(async (tx) => {
    await tx.query("SELECT pg_advisory_xact_lock(hashtext('dnah_migrations'))");
    await tx.query(
      `CREATE TABLE IF NOT EXISTS dnah_migrations (
         service text NOT NULL, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (service, name))`,
    );
    const done = new Set(
      (
        await tx.query<{ name: string }>("SELECT name FROM dnah_migrations WHERE service = $1", [service])
      ).rows.map((r) => r.name),
    );
    for (const file of files) {
      if (done.has(file)) continue;
      const sql = await readFile(join(dir, file), "utf8");
      for (const stmt of splitSql(sql)) await tx.query(stmt);
      await tx.query("INSERT INTO dnah_migrations (service, name) VALUES ($1, $2)", [service, file]);
      applied.push(file);
    }
  });
  return applied;
}

/** Splits a migration into statements on `;` at line ends (migrations keep to that form). */
function splitSql(sql: string): string[] {
  return sql
    .split(/;\s*(?:\r?\n|$)/)
    .map((s) => s.replace(/^\s*--.*$/gm, "").trim())
    .filter((s) => s.length > 0);
}
