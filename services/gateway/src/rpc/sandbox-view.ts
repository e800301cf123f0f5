import { create } from "@bufbuild/protobuf";
import {
  type ExpireAction,
  type LifecycleClock,
  LifecycleType,
  type Sandbox,
  type SandboxEvent,
  SandboxEventSchema,
  SandboxSchema,
  SandboxState,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import {
  type SandboxRecord,
  type ExpireAction as SchedulerExpireAction,
  type LifecycleClock as SchedulerLifecycleClock,
  LifecycleType as SchedulerLifecycleType,
  type SandboxEvent as SchedulerSandboxEvent,
  SandboxState as SchedulerSandboxState,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";

const STATES: Readonly<Record<SchedulerSandboxState, SandboxState>> = {
  [SchedulerSandboxState.UNSPECIFIED]: SandboxState.UNSPECIFIED,
  [SchedulerSandboxState.STARTING]: SandboxState.STARTING,
  [SchedulerSandboxState.RUNNING]: SandboxState.RUNNING,
  [SchedulerSandboxState.PAUSED]: SandboxState.PAUSED,
  [SchedulerSandboxState.STOPPED]: SandboxState.STOPPED,
  [SchedulerSandboxState.DELETED]: SandboxState.DELETED,
  [SchedulerSandboxState.ARCHIVED]: SandboxState.ARCHIVED,
  [SchedulerSandboxState.LOST]: SandboxState.LOST,
};

const LIFECYCLE_TYPES: Readonly<Record<SchedulerLifecycleType, LifecycleType>> = {
  [SchedulerLifecycleType.UNSPECIFIED]: LifecycleType.UNSPECIFIED,
  [SchedulerLifecycleType.PERSISTENT]: LifecycleType.PERSISTENT,
  [SchedulerLifecycleType.EPHEMERAL]: LifecycleType.EPHEMERAL,
};

/** The explicit lifecycle values of a public create or update request, for the scheduler's. */
export function schedulerLifecycleValues(req: {
  autoStopMinutes?: number | undefined;
  autoArchiveDays?: number | undefined;
  autoDeleteDays?: number | undefined;
  clock?: LifecycleClock | undefined;
  deleteOnStop?: boolean | undefined;
  expiresInSeconds?: number | undefined;
  onExpire?: ExpireAction | undefined;
}) {
  return {
    ...(req.autoStopMinutes !== undefined ? { autoStopMinutes: req.autoStopMinutes } : {}),
    ...(req.autoArchiveDays !== undefined ? { autoArchiveDays: req.autoArchiveDays } : {}),
    ...(req.autoDeleteDays !== undefined ? { autoDeleteDays: req.autoDeleteDays } : {}),
    ...(req.clock !== undefined ? { clock: req.clock as number as SchedulerLifecycleClock } : {}),
    ...(req.deleteOnStop !== undefined ? { deleteOnStop: req.deleteOnStop } : {}),
    ...(req.expiresInSeconds !== undefined ? { expiresInSeconds: req.expiresInSeconds } : {}),
    ...(req.onExpire !== undefined ? { onExpire: req.onExpire as number as SchedulerExpireAction } : {}),
  };
}

/** The scheduler's preset for a public one (unspecified stays unspecified: persistent there). */
export function toSchedulerLifecycleType(t: LifecycleType): SchedulerLifecycleType {
  switch (t) {
    case LifecycleType.PERSISTENT:
      return SchedulerLifecycleType.PERSISTENT;
    case LifecycleType.EPHEMERAL:
      return SchedulerLifecycleType.EPHEMERAL;
    default:
      return SchedulerLifecycleType.UNSPECIFIED;
  }
}

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
    ...(r.lifecycle !== undefined
      ? {
          lifecycle: {
            type: LIFECYCLE_TYPES[r.lifecycle.type] ?? LifecycleType.UNSPECIFIED,
            autoStopMinutes: r.lifecycle.autoStopMinutes,
            autoArchiveDays: r.lifecycle.autoArchiveDays,
            autoDeleteDays: r.lifecycle.autoDeleteDays,
            // The scheduler's enums number their values as the public ones do.
            clock: r.lifecycle.clock as number as LifecycleClock,
            deleteOnStop: r.lifecycle.deleteOnStop,
            ...(r.lifecycle.expiresAt !== undefined ? { expiresAt: r.lifecycle.expiresAt } : {}),
            onExpire: r.lifecycle.onExpire as number as ExpireAction,
          },
        }
      : {}),
    ...(r.lastActivityAt !== undefined ? { lastActivityAt: r.lastActivityAt } : {}),
    ...(r.archivedAt !== undefined ? { archivedAt: r.archivedAt } : {}),
  });
}

/** The public view of one recorded transition. */
export function toSandboxEvent(e: SchedulerSandboxEvent): SandboxEvent {
  return create(SandboxEventSchema, {
    eventId: e.eventId,
    sandboxId: e.sandboxId,
    ...(e.at !== undefined ? { at: e.at } : {}),
    kind: e.kind,
    fromState: STATES[e.fromState] ?? SandboxState.UNSPECIFIED,
    toState: STATES[e.toState] ?? SandboxState.UNSPECIFIED,
    actor: e.actor,
    detail: e.detail,
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
    case SandboxState.ARCHIVED:
      return SchedulerSandboxState.ARCHIVED;
    default:
      return undefined;
  }
}
