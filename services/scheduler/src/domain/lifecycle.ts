import { InvalidArgumentError } from "./errors.js";

/**
 * Lifecycle presets and the reaper's rules (pure: no I/O, no clock of its own).
 *
 * | type       | auto-stop (idle min) | auto-archive (days stopped) | auto-delete (days archived) |
 * |------------|----------------------|-----------------------------|-----------------------------|
 * | persistent | 0 (never)            | 0 (never)                   | 0 (never)                   |
 * | ephemeral  | 15                   | 7                           | 30                          |
 *
 * Explicit values always win over the preset. auto-delete counts from the archive, or from
 * the stop for a sandbox that is never archived (auto-archive 0).
 */
export type LifecycleType = "persistent" | "ephemeral";

export interface LifecycleSettings {
  readonly type: LifecycleType;
  readonly autoStopMinutes: number;
  readonly autoArchiveDays: number;
  readonly autoDeleteDays: number;
}

export const PRESETS: Readonly<Record<LifecycleType, LifecycleSettings>> = {
  persistent: { type: "persistent", autoStopMinutes: 0, autoArchiveDays: 0, autoDeleteDays: 0 },
  ephemeral: { type: "ephemeral", autoStopMinutes: 15, autoArchiveDays: 7, autoDeleteDays: 30 },
};

/** Upper bounds: ten years (the column checks say the same). */
export const MAX_AUTO_STOP_MINUTES = 10 * 365 * 24 * 60;
export const MAX_DAYS = 10 * 365;

export interface LifecycleOverrides {
  readonly autoStopMinutes?: number | undefined;
  readonly autoArchiveDays?: number | undefined;
  readonly autoDeleteDays?: number | undefined;
}

function checked(name: string, v: number | undefined, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < 0 || v > max)
    throw new InvalidArgumentError(`${name} must be an integer from 0 (never) to ${max}`);
  return v;
}

/** The preset of `type` with every explicit value laid over it; bad values are InvalidArgument. */
export function resolveLifecycle(type: LifecycleType, o: LifecycleOverrides = {}): LifecycleSettings {
  return applyOverrides(PRESETS[type], o);
}

/** `current` with the given values changed (an update keeps what it does not name). */
export function applyOverrides(current: LifecycleSettings, o: LifecycleOverrides): LifecycleSettings {
  return {
    type: current.type,
    autoStopMinutes:
      checked("auto_stop_minutes", o.autoStopMinutes, MAX_AUTO_STOP_MINUTES) ?? current.autoStopMinutes,
    autoArchiveDays: checked("auto_archive_days", o.autoArchiveDays, MAX_DAYS) ?? current.autoArchiveDays,
    autoDeleteDays: checked("auto_delete_days", o.autoDeleteDays, MAX_DAYS) ?? current.autoDeleteDays,
  };
}

const MINUTE_MS = 60_000;
const DAY_MS = 24 * 60 * MINUTE_MS;

/** What the reaper may do to a sandbox, and the rule that makes it due. */
export type ReaperOp = "stop" | "archive" | "delete";

export interface ReaperView extends LifecycleSettings {
  readonly state: string;
  readonly lastActivityAt: Date;
  readonly pausedAt: Date | null;
  readonly archivedAt: Date | null;
}

/**
 * The transition due for a sandbox at `nowMs`, or undefined. Running and idle for
 * auto-stop minutes → stop; paused for auto-archive days → archive; archived (or paused, when
 * auto-archive is 0) for auto-delete days → delete.
 */
export function dueOp(s: ReaperView, nowMs: number): ReaperOp | undefined {
  if (s.state === "running")
    return s.autoStopMinutes > 0 && nowMs >= s.lastActivityAt.getTime() + s.autoStopMinutes * MINUTE_MS
      ? "stop"
      : undefined;
  if (s.state === "paused" && s.pausedAt !== null) {
    if (s.autoArchiveDays > 0)
      return nowMs >= s.pausedAt.getTime() + s.autoArchiveDays * DAY_MS ? "archive" : undefined;
    return s.autoDeleteDays > 0 && nowMs >= s.pausedAt.getTime() + s.autoDeleteDays * DAY_MS
      ? "delete"
      : undefined;
  }
  if (s.state === "archived" && s.archivedAt !== null)
    return s.autoDeleteDays > 0 && nowMs >= s.archivedAt.getTime() + s.autoDeleteDays * DAY_MS
      ? "delete"
      : undefined;
  return undefined;
}

/** The kinds of events a sandbox's history holds. */
export type EventKind =
  | "created"
  | "paused"
  | "resumed"
  | "stopped"
  | "archiving"
  | "archived"
  | "unarchiving"
  | "unarchived"
  | "deleted"
  | "lifecycle_updated"
  | "failed";

/** A lifecycle change in words for the event log ("auto_stop_minutes 15 -> 30"); "" for none. */
export function describeChange(a: LifecycleSettings, b: LifecycleSettings): string {
  const parts: string[] = [];
  if (a.autoStopMinutes !== b.autoStopMinutes)
    parts.push(`auto_stop_minutes ${a.autoStopMinutes} -> ${b.autoStopMinutes}`);
  if (a.autoArchiveDays !== b.autoArchiveDays)
    parts.push(`auto_archive_days ${a.autoArchiveDays} -> ${b.autoArchiveDays}`);
  if (a.autoDeleteDays !== b.autoDeleteDays)
    parts.push(`auto_delete_days ${a.autoDeleteDays} -> ${b.autoDeleteDays}`);
  return parts.join(", ");
}
