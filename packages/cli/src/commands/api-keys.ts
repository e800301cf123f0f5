import type { ApiKeyRow } from "@dnah/gateway/api-keys";
import { type Db, type Env, openDb } from "@dnah/platform";
import { CliError, EXIT, out, printJson, table } from "../api.js";

/**
 * `dnah keys …`: the gateway's API keys, straight in Postgres (DATABASE_URL, and
 * DNAH_DB_SCHEMA when the gateway uses one). An operator command for the control-plane
 * server: the API has no route that mints keys, so a leaked key cannot make more.
 */

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_NAME = 200;

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Runs fn in one transaction on the gateway's tables. DNAH_DB_SCHEMA is set for that
 * transaction only (`SET LOCAL`): an operator command must not create a schema by mistake.
 */
async function withDb<T>(
  env: Env,
  fn: (db: Pick<Db, "query">, gw: typeof import("@dnah/gateway/api-keys")) => Promise<T>,
): Promise<T> {
  const url = env.DATABASE_URL?.trim();
  if (url === undefined || url === "")
    throw new CliError("set DATABASE_URL to the gateway's Postgres (postgres://…)", EXIT.usage);
  const schema = env.DNAH_DB_SCHEMA?.trim() || undefined;
  if (schema !== undefined && !SCHEMA_RE.test(schema))
    throw new CliError(`DNAH_DB_SCHEMA is not a schema name: '${schema.slice(0, 70)}'`, EXIT.usage);
  const gw = await import("@dnah/gateway/api-keys");
  const db = await openDb({ url, maxConnections: 1 });
  try {
    return await db.transaction(async (tx) => {
      if (schema !== undefined) await tx.query(`SET LOCAL search_path TO ${schema}`);
      return fn(tx, gw);
    });
  } catch (err) {
    if (err instanceof CliError) throw err;
    const e = err as { code?: string; message?: string };
    if (e.code === "42P01")
      throw new CliError(
        "the gateway's tables are not in this database: start the gateway once (it creates them)",
      );
    const where = url.replace(/\/\/[^@/]*@/, "//");
    throw new CliError(`database at ${where}: ${e.message ?? e.code ?? "failed"}`);
  } finally {
    await db.close();
  }
}

export const keyJson = (k: ApiKeyRow) => ({
  id: k.id,
  name: k.name,
  createdAt: k.createdAt.toISOString(),
  revokedAt: k.revokedAt?.toISOString() ?? null,
});

/** The `keys list` table (pure): ID, NAME, STATUS (live | revoked), CREATED, REVOKED. */
export function formatApiKeyTable(keys: readonly ApiKeyRow[]): string {
  const when = (d: Date | null) => (d === null ? "-" : `${d.toISOString().slice(0, 19)}Z`);
  return table([
    ["ID", "NAME", "STATUS", "CREATED", "REVOKED"],
    ...keys.map((k) => [
      k.id,
      k.name,
      k.revokedAt === null ? "live" : "revoked",
      when(k.createdAt),
      when(k.revokedAt),
    ]),
  ]);
}

/** `keys create --name N`: prints the plain key, the only time it exists. */
export async function apiKeysCreate(opts: { name: string; json?: boolean }, env: Env): Promise<void> {
  const name = opts.name.trim();
  if (name === "" || name.length > MAX_NAME)
    throw new CliError(`--name must be 1 to ${MAX_NAME} characters`, EXIT.usage);
  const { id, key } = await withDb(env, (db, gw) => gw.createApiKey(db, name));
  await (opts.json ? printJson({ id, name, key }) : out(`${key}\n`));
  if (!opts.json) process.stderr.write(`created API key ${id} (${name}); it is shown only this once\n`);
}

export async function apiKeysList(opts: { json?: boolean }, env: Env): Promise<void> {
  const keys = await withDb(env, (db, gw) => gw.listApiKeys(db));
  await (opts.json ? printJson(keys.map(keyJson)) : out(formatApiKeyTable(keys)));
}

/** `keys revoke <id>`: gateways stop accepting it within their cache time (30 s). */
export async function apiKeysRevoke(id: string, env: Env): Promise<void> {
  if (!UUID_RE.test(id)) throw new CliError(`no live API key with id '${id.slice(0, 100)}'`, EXIT.notFound);
  const revoked = await withDb(env, (db, gw) => gw.revokeApiKey(db, id));
  if (!revoked) throw new CliError(`no live API key with id '${id}'`, EXIT.notFound);
  await out(`revoked ${id}\n`);
}
