import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  ExpireAction,
  type FileEntry,
  type ForkResult,
  LifecycleClock,
  LifecycleType,
  type Sandbox,
  type SandboxEvent,
  type SandboxMetrics,
  SandboxState,
  type Snapshot,
  type SnapshotKey,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";

/** REST JSON for a sandbox (camelCase, state as a lower-case word, ISO timestamps). */
export function sandboxJson(s: Sandbox) {
  return {
    sandboxId: s.sandboxId,
    templateId: s.templateId,
    state: stateName(s.state),
    metadata: s.metadata,
    createdAt: s.createdAt !== undefined ? timestampDate(s.createdAt).toISOString() : null,
    cpuCount: s.cpuCount,
    memoryMib: s.memoryMib,
    hostId: s.hostId,
    runtime: s.runtime,
    pausedAt: s.pausedAt !== undefined ? timestampDate(s.pausedAt).toISOString() : null,
    /** The snapshot it was restored or forked from; null for a fresh sandbox. */
    sourceSnapshotId: s.sourceSnapshotId === "" ? null : s.sourceSnapshotId,
    lifecycle: {
      type: s.lifecycle?.type === LifecycleType.EPHEMERAL ? "ephemeral" : "persistent",
      autoStopMinutes: s.lifecycle?.autoStopMinutes ?? 0,
      autoArchiveDays: s.lifecycle?.autoArchiveDays ?? 0,
      autoDeleteDays: s.lifecycle?.autoDeleteDays ?? 0,
      /** What archive and delete count from: "state_change" or "last_activity" (Daytona's rule). */
      clock: s.lifecycle?.clock === LifecycleClock.LAST_ACTIVITY ? "last_activity" : "state_change",
      deleteOnStop: s.lifecycle?.deleteOnStop ?? false,
      /** A running sandbox's deadline whatever its activity (E2B's timeout); null for none. */
      expiresAt: iso(s.lifecycle?.expiresAt),
      onExpire: s.lifecycle?.onExpire === ExpireAction.STOP ? "stop" : "delete",
    },
    /** The last working call (the idle clock of auto-stop). */
    lastActivityAt: iso(s.lastActivityAt),
    archivedAt: iso(s.archivedAt),
  };
}

const iso = (t: Sandbox["createdAt"]): string | null =>
  t !== undefined ? timestampDate(t).toISOString() : null;

const stateName = (s: SandboxState): string => (SandboxState[s] ?? "UNSPECIFIED").toLowerCase();

/** One recorded transition; `eventId` is a string (a 64-bit counter), states as in Sandbox. */
export function eventJson(e: SandboxEvent) {
  return {
    eventId: e.eventId.toString(),
    sandboxId: e.sandboxId,
    at: iso(e.at),
    kind: e.kind,
    fromState: e.fromState === SandboxState.UNSPECIFIED ? null : stateName(e.fromState),
    toState: e.toState === SandboxState.UNSPECIFIED ? null : stateName(e.toState),
    actor: e.actor,
    detail: e.detail,
  };
}

/**
 * REST JSON for a snapshot. `memory` and `restoreSemantics` say what a restore brings back;
 * `signature` and `publicKey` (snapshot-keys) are base64, the digests lower-case hex.
 */
export function snapshotJson(s: Snapshot) {
  return {
    snapshotId: s.snapshotId,
    sandboxId: s.sandboxId,
    templateId: s.templateId,
    name: s.name === "" ? null : s.name,
    runtime: s.runtime,
    memory: s.memory,
    restoreSemantics: s.restoreSemantics,
    sizeBytes: Number(s.sizeBytes),
    manifestSha256: s.manifestSha256,
    kid: s.kid,
    signature: Buffer.from(s.signature).toString("base64"),
    createdAt: s.createdAt !== undefined ? timestampDate(s.createdAt).toISOString() : null,
    files: s.files.map((f) => ({ name: f.name, sizeBytes: Number(f.sizeBytes), sha256: f.sha256 })),
    metadata: s.metadata,
  };
}

/** One clone of a fork: `{sandbox}` or `{error, code}` (code: an error kind of the table). */
export function forkResultJson(r: ForkResult) {
  if (r.sandbox !== undefined) return { sandbox: sandboxJson(r.sandbox) };
  return { error: r.error, code: r.errorCode };
}

export function snapshotKeyJson(k: SnapshotKey) {
  return {
    kid: k.kid,
    publicKey: Buffer.from(k.publicKey).toString("base64"),
    status: k.status,
    createdAt: k.createdAt !== undefined ? timestampDate(k.createdAt).toISOString() : null,
    ...(k.retiredAt !== undefined ? { retiredAt: timestampDate(k.retiredAt).toISOString() } : {}),
  };
}

/** REST JSON for a metrics sample (byte counts as numbers: exact below 2^53). */
export function metricsJson(m: SandboxMetrics) {
  return {
    timestamp: m.timestamp !== undefined ? timestampDate(m.timestamp).toISOString() : null,
    cpuCount: m.cpuCount,
    cpuUsedPct: m.cpuUsedPct,
    memUsedBytes: Number(m.memUsedBytes),
    memTotalBytes: Number(m.memTotalBytes),
    memCacheBytes: Number(m.memCacheBytes),
    diskUsedBytes: Number(m.diskUsedBytes),
    diskTotalBytes: Number(m.diskTotalBytes),
  };
}

export function fileEntryJson(e: FileEntry) {
  return {
    name: e.name,
    path: e.path,
    type: e.type,
    sizeBytes: Number(e.sizeBytes),
    modifiedAt: e.modifiedAt !== undefined ? timestampDate(e.modifiedAt).toISOString() : null,
  };
}
