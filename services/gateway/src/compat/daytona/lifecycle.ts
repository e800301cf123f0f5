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
/** Upper bound of any interval, so `make_interval(mins => n)` cannot overflow. */
export const MAX_INTERVAL_MIN = 10 * 365 * 24 * 60;

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
