import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  ExpireAction,
  type HostRecordSchema,
  LifecycleClock,
  type LifecycleSchema,
  LifecycleType,
  type SandboxEventSchema,
  type SandboxRecordSchema,
  SandboxState,
  type SnapshotRecordSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { HostLoadRow, SandboxEventRow, SandboxRow, SandboxRowState, SnapshotRow } from "./db/queries.js";
import type {
  LifecycleOverrides,
  LifecycleSettings,
  LifecycleType as LifecycleTypeName,
} from "./domain/lifecycle.js";

export function toRecord(row: SandboxRow): MessageInitShape<typeof SandboxRecordSchema> {
  return {
    sandboxId: row.id,
    templateId: row.templateId,
    state: toState(row.state),
    metadata: row.metadata,
    envVars: row.envVars,
    createdAt: timestampFromDate(row.createdAt),
    hostId: row.hostId,
    vmmUrl: row.vmmUrl,
    cpuCount: row.cpuCount,
    memoryMib: row.memoryMib,
    runtime: row.runtime,
    ...(row.pausedAt !== null ? { pausedAt: timestampFromDate(row.pausedAt) } : {}),
    sourceSnapshotId: row.sourceSnapshotId ?? "",
    lifecycle: toLifecycleRecord(row.lifecycle),
    lastActivityAt: timestampFromDate(row.lastActivityAt),
    ...(row.archivedAt !== null ? { archivedAt: timestampFromDate(row.archivedAt) } : {}),
  };
}

function toLifecycleRecord(l: LifecycleSettings): MessageInitShape<typeof LifecycleSchema> {
  return {
    type: l.type === "ephemeral" ? LifecycleType.EPHEMERAL : LifecycleType.PERSISTENT,
    autoStopMinutes: l.autoStopMinutes,
    autoArchiveDays: l.autoArchiveDays,
    autoDeleteDays: l.autoDeleteDays,
    clock: l.clock === "last_activity" ? LifecycleClock.LAST_ACTIVITY : LifecycleClock.STATE_CHANGE,
    deleteOnStop: l.deleteOnStop,
    ...(l.expiresAt !== null ? { expiresAt: timestampFromDate(l.expiresAt) } : {}),
    onExpire: l.onExpire === "stop" ? ExpireAction.STOP : ExpireAction.DELETE,
  };
}

/** The explicit lifecycle values of a create or update request (unset fields stay unset). */
export function lifecycleOverridesOf(req: {
  autoStopMinutes?: number | undefined;
  autoArchiveDays?: number | undefined;
  autoDeleteDays?: number | undefined;
  clock?: LifecycleClock | undefined;
  deleteOnStop?: boolean | undefined;
  expiresInSeconds?: number | undefined;
  onExpire?: ExpireAction | undefined;
}): LifecycleOverrides {
  return {
    autoStopMinutes: req.autoStopMinutes,
    autoArchiveDays: req.autoArchiveDays,
    autoDeleteDays: req.autoDeleteDays,
    clock:
      req.clock === undefined || req.clock === LifecycleClock.UNSPECIFIED
        ? undefined
        : req.clock === LifecycleClock.LAST_ACTIVITY
          ? "last_activity"
          : "state_change",
    deleteOnStop: req.deleteOnStop,
    expiresInSeconds: req.expiresInSeconds,
    onExpire:
      req.onExpire === undefined || req.onExpire === ExpireAction.UNSPECIFIED
        ? undefined
        : req.onExpire === ExpireAction.STOP
          ? "stop"
          : "delete",
  };
}

/** The preset a request names; unspecified is persistent. */
export function lifecycleTypeOf(t: LifecycleType): LifecycleTypeName {
  return t === LifecycleType.EPHEMERAL ? "ephemeral" : "persistent";
}

export function toHostRecord(h: HostLoadRow, live: boolean): MessageInitShape<typeof HostRecordSchema> {
  return {
    hostId: h.hostId,
    vmmUrl: h.vmmUrl,
    runtime: h.runtime,
    capacitySandboxes: h.capacity,
    runningSandboxes: h.running,
    vcpus: h.vcpus,
    usedVcpus: h.usedVcpus,
    memoryMib: BigInt(h.memoryMib),
    usedMemoryMib: BigInt(h.usedMemoryMib),
    diskFreeMib: BigInt(h.diskFreeMib),
    labels: h.labels,
    templates: h.templates,
    draining: h.draining,
    live,
    lastHeartbeat: timestampFromDate(h.lastHeartbeat),
    registeredAt: timestampFromDate(h.registeredAt),
  };
}

export function toEventRecord(e: SandboxEventRow): MessageInitShape<typeof SandboxEventSchema> {
  return {
    eventId: e.id,
    sandboxId: e.sandboxId,
    at: timestampFromDate(e.at),
    kind: e.kind,
    fromState: stateOfName(e.fromState),
    toState: stateOfName(e.toState),
    actor: e.actor,
    detail: e.detail,
  };
}

function stateOfName(s: string): SandboxState {
  return s === "" ? SandboxState.UNSPECIFIED : toState(s as SandboxRowState);
}

/** created_at is the signed millisecond timestamp, so a verifier can rebuild the signed bytes. */
export function toSnapshotRecord(row: SnapshotRow): MessageInitShape<typeof SnapshotRecordSchema> {
  return {
    snapshotId: row.id,
    sandboxId: row.sandboxId,
    templateId: row.templateId,
    hostId: row.hostId,
    runtime: row.runtime,
    memory: row.memory,
    manifestSha256: row.manifestSha256,
    sizeBytes: row.sizeBytes,
    createdAt: timestampFromMs(row.createdAtMs),
    kid: row.kid ?? "",
    signature: row.signature ?? new Uint8Array(),
    files: row.files.map((f) => ({ name: f.name, sizeBytes: f.sizeBytes, sha256: f.sha256 })),
    name: row.name ?? "",
    cpuCount: row.cpuCount,
    memoryMib: row.memoryMib,
    metadata: row.metadata,
  };
}

function timestampFromMs(ms: bigint) {
  return { seconds: ms / 1000n, nanos: Number(ms % 1000n) * 1_000_000 };
}

/**
 * The row state a listed state filter means; undefined for states that are never listed
 * (unspecified, deleted).
 */
export function rowStateOf(s: SandboxState): SandboxRowState | undefined {
  switch (s) {
    case SandboxState.STARTING:
      return "starting";
    case SandboxState.RUNNING:
      return "running";
    case SandboxState.PAUSED:
      return "paused";
    case SandboxState.STOPPED:
      return "stopped";
    case SandboxState.ARCHIVED:
      return "archived";
    default:
      return undefined;
  }
}

function toState(s: SandboxRowState): SandboxState {
  switch (s) {
    case "starting":
      return SandboxState.STARTING;
    case "running":
      return SandboxState.RUNNING;
    case "paused":
      return SandboxState.PAUSED;
    case "stopped":
      return SandboxState.STOPPED;
    case "archived":
      return SandboxState.ARCHIVED;
    case "lost":
      return SandboxState.LOST;
    // Get and List never return these; a record of one is as good as gone.
    case "deleting":
    case "deleted":
    case "error":
      return SandboxState.DELETED;
  }
}
