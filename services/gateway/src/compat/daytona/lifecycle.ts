import {
  type Lifecycle,
  LifecycleClock,
  LifecycleType,
  SandboxState,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";

/**
 * Daytona's sandbox lifecycle as this gateway implements it (spec §6-§8): pure rules, no I/O.
 *
 * | Daytona state | underneath (native)                       |
 * |---------------|-------------------------------------------|
 * | started       | running                                   |
 * | stopping      | PauseSandbox in flight                    |
 * | stopped       | paused (memory and filesystem kept)       |
 * | archiving     | ArchiveSandbox in flight                  |
 * | archived      | archived: a signed snapshot in archive    |
 * |               | storage, nothing on a host (start restores) |
 * | pausing       | PauseSandbox in flight (SDK `pause()`)    |
 * | paused        | paused (memory and filesystem kept)       |
 * | starting      | ResumeSandbox in flight                   |
 * | destroying    | DeleteSandbox in flight                   |
 * | error         | a transition failed; errorReason says why |
 *
 * The intervals are the native lifecycle (one record, enforced by the scheduler's reaper):
 *
 * | Daytona (minutes)         | native                                            |
 * |---------------------------|---------------------------------------------------|
 * | every sandbox             | type persistent, explicit values, clock last_activity |
 * | autoStopInterval N        | autoStopMinutes N (0 = never, both sides)         |
 * | autoArchiveInterval N     | autoArchiveDays N / 1440 (0 = the maximum, 30 d)  |
 * | autoDeleteInterval -1     | autoDeleteDays 0, deleteOnStop false              |
 * | autoDeleteInterval 0      | deleteOnStop true (ephemeral)                     |
 * | autoDeleteInterval N > 0  | autoDeleteDays N / 1440                           |
 *
 * Read back, minutes are `Math.round(days × 1440)`. The reaper stops, archives and deletes
 * underneath the Daytona row; a read that sees it moves the row along (`observedState`).
 */
export type DaytonaState =
  | "creating"
  | "started"
  | "stopping"
  | "stopped"
  | "archived"
  | "archiving"
  | "pausing"
  | "paused"
  | "starting"
  | "destroying"
  | "destroyed"
  | "error";

/** Defaults of Daytona v0.190 (minutes). */
export const DEFAULT_AUTO_STOP_MIN = 15;
export const DEFAULT_AUTO_ARCHIVE_MIN = 10_080;
export const DEFAULT_AUTO_DELETE_MIN = -1;
/** autoArchive 0 means "the maximum"; larger values are clamped to it (30 days). */
export const MAX_AUTO_ARCHIVE_MIN = 43_200;
/** Upper bound of any interval: ten years, the native lifecycle's bound too. */
export const MAX_INTERVAL_MIN = 10 * 365 * 24 * 60;

const MIN_PER_DAY = 1440;

/** Daytona's intervals in minutes, as its DTO shows them. */
export interface Intervals {
  autoStop: number;
  autoArchive: number;
  autoDelete: number;
}

/** autoArchive 0 is "the maximum", and larger values are clamped to it. */
export function normalizeAutoArchive(min: number): number {
  return min === 0 || min > MAX_AUTO_ARCHIVE_MIN ? MAX_AUTO_ARCHIVE_MIN : min;
}

/** Any negative autoDelete means "never" (-1); 0 "as soon as it stops". */
export function normalizeAutoDelete(min: number): number {
  return min < 0 ? -1 : min;
}

/**
 * The native lifecycle values (CreateSandbox / UpdateLifecycle fields) for the given
 * (normalized) intervals; the ones left out are not sent. Always the last_activity clock.
 */
export function nativeLifecycleValues(i: Partial<Intervals>): {
  clock: LifecycleClock;
  autoStopMinutes?: number;
  autoArchiveDays?: number;
  autoDeleteDays?: number;
  deleteOnStop?: boolean;
} {
  return {
    clock: LifecycleClock.LAST_ACTIVITY,
    ...(i.autoStop !== undefined ? { autoStopMinutes: i.autoStop } : {}),
    ...(i.autoArchive !== undefined ? { autoArchiveDays: i.autoArchive / MIN_PER_DAY } : {}),
    ...(i.autoDelete !== undefined
      ? {
          autoDeleteDays: i.autoDelete > 0 ? i.autoDelete / MIN_PER_DAY : 0,
          deleteOnStop: i.autoDelete === 0,
        }
      : {}),
  };
}

/** Every Daytona sandbox is created persistent with all its values explicit. */
export const NATIVE_TYPE = LifecycleType.PERSISTENT;

/** The Daytona intervals of a native lifecycle (whoever set it: Daytona, the native API). */
export function intervalsOf(l: Lifecycle): Intervals {
  const min = (days: number) => Math.round(days * MIN_PER_DAY);
  return {
    autoStop: l.autoStopMinutes,
    autoArchive: min(l.autoArchiveDays),
    autoDelete: l.deleteOnStop ? 0 : l.autoDeleteDays > 0 ? min(l.autoDeleteDays) : -1,
  };
}

/**
 * The Daytona state a row should move to now that its native sandbox was seen in `native`
 * ("gone": NotFound or deleted); undefined when it stays. Only settled states follow the
 * native one (the reaper stopped, archived or deleted it, or the native API resumed it);
 * Daytona's own transitional states and `error` are left to the action that set them, and
 * a native pause does not turn a Daytona `paused` into `stopped` (both are paused underneath).
 */
export function observedState(
  s: DaytonaState,
  native: SandboxState | "gone",
): DaytonaState | "gone" | undefined {
  const settled = s === "started" || s === "stopped" || s === "paused" || s === "archived";
  if (native === "gone" || native === SandboxState.DELETED) return s === "destroying" ? undefined : "gone";
  if (!settled) return undefined;
  switch (native) {
    case SandboxState.RUNNING:
      return s === "started" ? undefined : "started";
    case SandboxState.PAUSED:
      return s === "started" || s === "archived" ? "stopped" : undefined;
    case SandboxState.ARCHIVED:
      return s === "archived" ? undefined : "archived";
    default:
      return undefined;
  }
}

/** Where each action may start from (spec §7, restricted to the states this gateway has). */
export const FROM: Readonly<
  Record<"start" | "stop" | "pause" | "archive" | "delete", readonly DaytonaState[]>
> = {
  start: ["started", "stopped", "archived", "paused", "error"],
  stop: ["started", "stopped", "paused", "error"],
  pause: ["started", "paused", "error"],
  archive: ["stopped", "archived", "error"],
  delete: ["started", "stopped", "archived", "paused", "error", "destroying"],
};

/** Daytona's `desiredState` for a state. */
export function desiredStateOf(s: DaytonaState): string {
  switch (s) {
    case "creating":
    case "starting":
    case "started":
      return "started";
    case "stopping":
    case "stopped":
      return "stopped";
    case "archiving":
    case "archived":
      return "archived";
    case "pausing":
    case "paused":
      return "paused";
    case "destroying":
    case "destroyed":
      return "destroyed";
    case "error":
      return "started";
  }
}

/** States a caller may filter the list by; anything else is a 400. */
export const LISTABLE_STATES: ReadonlySet<string> = new Set([
  "creating",
  "started",
  "stopping",
  "stopped",
  "archived",
  "archiving",
  "pausing",
  "paused",
  "starting",
  "destroying",
  "error",
  // Valid Daytona states this gateway never has: accepted, they just match nothing.
  "restoring",
  "unknown",
  "pulling_snapshot",
  "pending_build",
  "building_snapshot",
  "build_failed",
  "resizing",
  "snapshotting",
  "forking",
  "resuming",
]);
