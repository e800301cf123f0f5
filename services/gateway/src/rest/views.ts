import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  type FileEntry,
  type Sandbox,
  type SandboxMetrics,
  SandboxState,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";

/** REST JSON for a sandbox (camelCase, state as a lower-case word, ISO timestamps). */
export function sandboxJson(s: Sandbox) {
  return {
    sandboxId: s.sandboxId,
    templateId: s.templateId,
    state: (SandboxState[s.state] ?? "UNSPECIFIED").toLowerCase(),
    metadata: s.metadata,
    createdAt: s.createdAt !== undefined ? timestampDate(s.createdAt).toISOString() : null,
    cpuCount: s.cpuCount,
    memoryMib: s.memoryMib,
    hostId: s.hostId,
    runtime: s.runtime,
    pausedAt: s.pausedAt !== undefined ? timestampDate(s.pausedAt).toISOString() : null,
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
