import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type SandboxRecordSchema, SandboxState } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { SandboxRow, SandboxRowState } from "./db/queries.js";

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
  };
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
    // Get and List never return these; a record of one is as good as gone.
    case "deleting":
    case "deleted":
    case "error":
      return SandboxState.DELETED;
  }
}
