import { createHash } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Sandbox } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { DaytonaRow } from "./db.js";
import { desiredStateOf, intervalsOf } from "./lifecycle.js";

/** The agent's version is not tracked per sandbox; the SDK only displays it. */
const DAEMON_VERSION = "dnah";

/**
 * Daytona's organization id for an API key: a UUID-shaped digest of the key's hash, so it
 * names the key without revealing anything stored. Also the socket.io room of its events.
 */
export function organizationIdOf(ownerSha256: string): string {
  const h = createHash("sha256").update(`dnah-daytona-org\0${ownerSha256}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/**
 * The Sandbox DTO (spec §5.3). `full` adds `env` (and the fields that go with it): the SDK
 * tells full DTOs from list items by the presence of `env`. `toolboxProxyUrl` is in every one,
 * so the SDK never asks for it separately. The intervals and `lastActivityAt` are the native
 * sandbox's (its lifecycle); without it (a socket.io event sent mid-move) they are left out.
 */
export function sandboxDto(
  r: DaytonaRow,
  native: Sandbox | undefined,
  toolboxProxyUrl: string,
  full: boolean,
): Record<string, unknown> {
  const iv = native?.lifecycle !== undefined ? intervalsOf(native.lifecycle) : undefined;
  const lastActivity = native?.lastActivityAt;
  const dto: Record<string, unknown> = {
    id: r.sandbox_id,
    organizationId: organizationIdOf(r.owner_sha256),
    name: r.name,
    snapshot: r.snapshot,
    user: r.os_user,
    labels: r.labels,
    public: r.public,
    networkBlockAll: r.network_block_all,
    ...(r.network_allow_list !== null ? { networkAllowList: r.network_allow_list } : {}),
    target: r.target,
    cpu: r.cpu,
    gpu: 0,
    memory: r.memory_gib,
    disk: r.disk_gib,
    state: r.state,
    desiredState: desiredStateOf(r.state),
    ...(r.error_reason !== null ? { errorReason: r.error_reason } : {}),
    recoverable: false,
    backupState: "None",
    ...(iv !== undefined
      ? {
          autoStopInterval: iv.autoStop,
          autoArchiveInterval: iv.autoArchive,
          autoDeleteInterval: iv.autoDelete,
        }
      : {}),
    autoPauseInterval: 0,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
    ...(lastActivity !== undefined ? { lastActivityAt: timestampDate(lastActivity).toISOString() } : {}),
    sandboxClass: "container",
    daemonVersion: DAEMON_VERSION,
    toolboxProxyUrl,
  };
  if (full) {
    dto.env = r.env;
    dto.volumes = [];
    dto.kvm = false;
  }
  return dto;
}
