import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { createServiceClient, type Env } from "@dnah/platform";
import { type HostRecord, SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";

/** `dnah hosts …`: the scheduler's hosts, over its Connect API. */

export const DEFAULT_SCHEDULER_URL = "http://127.0.0.1:7001";
const CALL_TIMEOUT_MS = 15_000;

export interface HostsOptions {
  schedulerUrl?: string;
  json?: boolean;
}

function schedulerUrl(opts: HostsOptions, env: Env): string {
  return opts.schedulerUrl ?? (env.DNAH_SCHEDULER_URL || DEFAULT_SCHEDULER_URL);
}

/** `dnah hosts list`: every host with its load, liveness and labels. */
export async function hostsList(opts: HostsOptions, env: Env): Promise<void> {
  const { hosts } = await call(schedulerUrl(opts, env), (c) =>
    c.listHosts({}, { timeoutMs: CALL_TIMEOUT_MS }),
  );
  process.stdout.write(
    opts.json ? `${JSON.stringify(hosts.map(hostJson), null, 2)}\n` : formatHostTable(hosts),
  );
}

/** `dnah hosts drain|undrain <id>`: maintenance on or off. */
export async function hostsDrain(
  hostId: string,
  draining: boolean,
  opts: HostsOptions,
  env: Env,
): Promise<void> {
  const { host } = await call(schedulerUrl(opts, env), (c) =>
    c.setHostDraining({ hostId, draining }, { timeoutMs: CALL_TIMEOUT_MS }),
  );
  process.stdout.write(
    opts.json
      ? `${JSON.stringify(hostJson(host!), null, 2)}\n`
      : `${hostId}: ${draining ? "draining (keeps what it runs, takes nothing new)" : "back in service"}\n`,
  );
}

export function hostJson(h: HostRecord) {
  return {
    hostId: h.hostId,
    vmmUrl: h.vmmUrl,
    runtime: h.runtime,
    live: h.live,
    draining: h.draining,
    sandboxes: h.runningSandboxes,
    capacity: h.capacitySandboxes,
    vcpus: h.vcpus,
    usedVcpus: h.usedVcpus,
    memoryMib: Number(h.memoryMib),
    usedMemoryMib: Number(h.usedMemoryMib),
    diskFreeMib: Number(h.diskFreeMib),
    labels: h.labels,
    templates: h.templates,
    lastHeartbeat: h.lastHeartbeat ? timestampDate(h.lastHeartbeat).toISOString() : null,
  };
}

export function formatHostTable(hosts: readonly HostRecord[]): string {
  const rows = [
    ["HOST", "STATUS", "SANDBOXES", "VCPUS", "MEMORY MIB", "LABELS", "URL"],
    ...hosts.map((h) => [
      h.hostId,
      !h.live ? "dead" : h.draining ? "draining" : "live",
      `${h.runningSandboxes}/${h.capacitySandboxes}`,
      h.vcpus > 0 ? `${h.usedVcpus}/${h.vcpus}` : "-",
      h.memoryMib > 0n ? `${h.usedMemoryMib}/${h.memoryMib}` : "-",
      Object.entries(h.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(",") || "-",
      h.vmmUrl,
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return `${rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n")}\n`;
}

type Client = ReturnType<typeof createServiceClient<typeof SchedulerService>>;

/** One call; a failure becomes one line naming the service, never a stack trace. */
async function call<T>(url: string, fn: (c: Client) => Promise<T>): Promise<T> {
  let client: Client;
  try {
    client = createServiceClient(SchedulerService, url);
  } catch (err) {
    throw new Error(`invalid --scheduler-url '${url}': ${(err as Error).message}`);
  }
  try {
    return await fn(client);
  } catch (err) {
    const msg = err instanceof ConnectError ? err.rawMessage : (err as Error).message;
    throw new Error(`scheduler at ${url}: ${msg}`);
  }
}
