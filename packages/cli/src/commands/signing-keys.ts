import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { createServiceClient, type Env } from "@dnah/platform";
import { type PublicKey, SnapshotService } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";

/** `dnah signing-keys …`: the snapshot service's signing keys, over its Connect API. */

export const DEFAULT_SNAPSHOT_URL = "http://127.0.0.1:7003";
/** Every call is one small request to a loopback service; anything slower is a hung service. */
const CALL_TIMEOUT_MS = 15_000;

export interface KeysOptions {
  snapshotUrl?: string;
}

export function snapshotUrl(opts: KeysOptions, env: Env): string {
  return opts.snapshotUrl ?? (env.DNAH_SNAPSHOT_URL || DEFAULT_SNAPSHOT_URL);
}

/** `dnah signing-keys list`: every key with its status, oldest first. */
export async function keysList(opts: KeysOptions, env: Env): Promise<void> {
  const url = snapshotUrl(opts, env);
  const { keys } = await call(url, (c) => c.listKeys({}, { timeoutMs: CALL_TIMEOUT_MS }));
  process.stdout.write(formatKeyTable(keys));
}

/** `dnah signing-keys rotate`: a new active key; prints its kid. */
export async function keysRotate(opts: KeysOptions, env: Env): Promise<void> {
  const url = snapshotUrl(opts, env);
  const { kid } = await call(url, (c) => c.rotateKey({}, { timeoutMs: CALL_TIMEOUT_MS }));
  process.stdout.write(`${kid}\n`);
}

/** `dnah signing-keys retire <kid>`: snapshots signed by it are refused from now on. */
export async function keysRetire(kid: string, opts: KeysOptions, env: Env): Promise<void> {
  const url = snapshotUrl(opts, env);
  await call(url, (c) => c.retireKey({ kid }, { timeoutMs: CALL_TIMEOUT_MS }));
  process.stdout.write(`retired ${kid}\n`);
}

type Client = ReturnType<typeof createServiceClient<typeof SnapshotService>>;

/** One call; a failure becomes one line naming the service, never a stack trace. */
async function call<T>(url: string, fn: (c: Client) => Promise<T>): Promise<T> {
  let client: Client;
  try {
    client = createServiceClient(SnapshotService, url);
  } catch (err) {
    throw new Error(`invalid --snapshot-url '${url}': ${(err as Error).message}`);
  }
  try {
    return await fn(client);
  } catch (err) {
    if (err instanceof ConnectError) {
      const why = err.cause instanceof Error ? err.cause.message : "";
      const cause = why !== "" && !err.rawMessage.includes(why) ? ` (${why})` : "";
      throw new Error(`snapshot service at ${url}: ${err.rawMessage}${cause}`);
    }
    throw new Error(`snapshot service at ${url}: ${(err as Error).message}`);
  }
}

/** The `signing-keys list` table: KID, STATUS (active | verifies | retired), CREATED, RETIRED. */
export function formatKeyTable(keys: readonly PublicKey[]): string {
  const when = (ts: PublicKey["createdAt"]) =>
    ts === undefined ? "-" : `${timestampDate(ts).toISOString().slice(0, 19)}Z`;
  const rows = keys.map((k) => [
    k.kid,
    k.active ? "active" : k.retiredAt !== undefined ? "retired" : "verifies",
    when(k.createdAt),
    when(k.retiredAt),
  ]);
  const header = ["KID", "STATUS", "CREATED", "RETIRED"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .concat("\n");
  return [header, ...rows].map(line).join("");
}
