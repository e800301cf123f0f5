import { create } from "@bufbuild/protobuf";
import { type Sandbox, SandboxSchema, SandboxState } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import {
  type SandboxRecord,
  SandboxState as SchedulerSandboxState,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";

const STATES: Readonly<Record<SchedulerSandboxState, SandboxState>> = {
  [SchedulerSandboxState.UNSPECIFIED]: SandboxState.UNSPECIFIED,
  [SchedulerSandboxState.STARTING]: SandboxState.STARTING,
  [SchedulerSandboxState.RUNNING]: SandboxState.RUNNING,
  [SchedulerSandboxState.PAUSED]: SandboxState.PAUSED,
  [SchedulerSandboxState.STOPPED]: SandboxState.STOPPED,
  [SchedulerSandboxState.DELETED]: SandboxState.DELETED,
};

/**
 * The public view of a scheduler record. Deliberately leaves out `env_vars` (they may hold
 * secrets) and `vmm_url` (internal topology).
 */
export function toSandbox(r: SandboxRecord): Sandbox {
  return create(SandboxSchema, {
    sandboxId: r.sandboxId,
    templateId: r.templateId,
    state: STATES[r.state] ?? SandboxState.UNSPECIFIED,
    metadata: { ...r.metadata },
    ...(r.createdAt !== undefined ? { createdAt: r.createdAt } : {}),
    cpuCount: r.cpuCount,
    memoryMib: r.memoryMib,
    hostId: r.hostId,
    runtime: r.runtime,
    ...(r.pausedAt !== undefined ? { pausedAt: r.pausedAt } : {}),
    sourceSnapshotId: r.sourceSnapshotId,
  });
}

/**
 * The scheduler state a list filter asks for; undefined for states that are never listed
 * (unspecified, deleted).
 */
export function toSchedulerState(s: SandboxState): SchedulerSandboxState | undefined {
  switch (s) {
    case SandboxState.STARTING:
      return SchedulerSandboxState.STARTING;
    case SandboxState.RUNNING:
      return SchedulerSandboxState.RUNNING;
    case SandboxState.PAUSED:
      return SchedulerSandboxState.PAUSED;
    case SandboxState.STOPPED:
      return SchedulerSandboxState.STOPPED;
    default:
      return undefined;
  }
}
