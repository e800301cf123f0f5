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
 * the stop for a sandbox that is never archived (auto-archive 0); with the last_activity
 * clock both count from the last activity instead. The compatibility surfaces map onto the
 * same record: E2B's timeout is a deadline (`expiresAt`, `onExpire`), Daytona's intervals are
 * minutes / 1440 days on the last_activity clock, its autoDelete 0 is `deleteOnStop`.
 */
export type LifecycleType = "persistent" | "ephemeral";

/**
 * What the archive and delete clocks count from: "state_change" (dnah's presets: archive
 * from the stop, delete from the archive) or "last_activity" (Daytona's rule: both from the
 * last activity, once stopped).
 */
export type LifecycleClock = "state_change" | "last_activity";

/** What a running sandbox's deadline does when it passes (E2B: kill, or autoPause). */
export type ExpireAction = "delete" | "stop";

export interface LifecycleSettings {
  readonly type: LifecycleType;
  readonly autoStopMinutes: number;
  /** Fractions allowed: Daytona's minutes are days / 1440. */
  readonly autoArchiveDays: number;
  readonly autoDeleteDays: number;
  readonly clock: LifecycleClock;
  /** Deleted as soon as it is stopped (Daytona's autoDeleteInterval 0). */
  readonly deleteOnStop: boolean;
  /** A running sandbox's deadline whatever its activity (E2B's timeout); a pause clears it. */
  readonly expiresAt: Date | null;
  readonly onExpire: ExpireAction;
}

const NO_EXTRAS = {
  clock: "state_change",
  deleteOnStop: false,
  expiresAt: null,
  onExpire: "delete",
} as const;

export const PRESETS: Readonly<Record<LifecycleType, LifecycleSettings>> = {
  persistent: { type: "persistent", autoStopMinutes: 0, autoArchiveDays: 0, autoDeleteDays: 0, ...NO_EXTRAS },
  ephemeral: { type: "ephemeral", autoStopMinutes: 15, autoArchiveDays: 7, autoDeleteDays: 30, ...NO_EXTRAS },
};

/** Upper bounds: ten years (the column checks say the same). */
export const MAX_AUTO_STOP_MINUTES = 10 * 365 * 24 * 60;
export const MAX_DAYS = 10 * 365;
/** Longest deadline a caller may set: one year. */
export const MAX_EXPIRES_IN_SECONDS = 365 * 24 * 3600;

export interface LifecycleOverrides {
  readonly autoStopMinutes?: number | undefined;
  readonly autoArchiveDays?: number | undefined;
  readonly autoDeleteDays?: number | undefined;
  readonly clock?: LifecycleClock | undefined;
  readonly deleteOnStop?: boolean | undefined;
  /** A deadline this many seconds after `nowMs`; 0 removes it. */
  readonly expiresInSeconds?: number | undefined;
  readonly onExpire?: ExpireAction | undefined;
}

function checkedInt(name: string, v: number | undefined, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < 0 || v > max)
    throw new InvalidArgumentError(`${name} must be an integer from 0 (never) to ${max}`);
  return v;
}

function checkedDays(name: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isFinite(v) || v < 0 || v > MAX_DAYS)
    throw new InvalidArgumentError(`${name} must be a number of days from 0 (never) to ${MAX_DAYS}`);
  return v;
}

/** The preset of `type` with every explicit value laid over it; bad values are InvalidArgument. */
export function resolveLifecycle(
  type: LifecycleType,
  o: LifecycleOverrides = {},
  nowMs = Date.now(),
): LifecycleSettings {
  return applyOverrides(PRESETS[type], o, nowMs);
}

/** `current` with the given values changed (an update keeps what it does not name). */
export function applyOverrides(
  current: LifecycleSettings,
  o: LifecycleOverrides,
  nowMs = Date.now(),
): LifecycleSettings {
  const expiresIn = checkedInt("expires_in_seconds", o.expiresInSeconds, MAX_EXPIRES_IN_SECONDS);
  return {
    type: current.type,
    autoStopMinutes:
      checkedInt("auto_stop_minutes", o.autoStopMinutes, MAX_AUTO_STOP_MINUTES) ?? current.autoStopMinutes,
    autoArchiveDays: checkedDays("auto_archive_days", o.autoArchiveDays) ?? current.autoArchiveDays,
    autoDeleteDays: checkedDays("auto_delete_days", o.autoDeleteDays) ?? current.autoDeleteDays,
    clock: o.clock ?? current.clock,
    deleteOnStop: o.deleteOnStop ?? current.deleteOnStop,
    expiresAt:
      expiresIn === undefined
        ? current.expiresAt
        : expiresIn === 0
          ? null
          : new Date(nowMs + expiresIn * 1000),
    onExpire: o.onExpire ?? current.onExpire,
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
 * The transition due for a sandbox at `nowMs`, or undefined (db/queries.ts DUE says the same
 * in SQL):
 *  - running: past its deadline → its on-expire action; idle for auto-stop minutes → stop;
 *  - paused: delete-on-stop → delete; auto-archive days since the stop (or the last activity,
 *    with the last_activity clock) → archive; with auto-archive 0, auto-delete days → delete;
 *  - archived: auto-delete days since the archive (or the last activity) → delete.
 */
export function dueOp(s: ReaperView, nowMs: number): ReaperOp | undefined {
  const after = (from: Date | null, ms: number) => from !== null && ms > 0 && nowMs >= from.getTime() + ms;
  const byActivity = s.clock === "last_activity";
  if (s.state === "running") {
    if (s.expiresAt !== null && nowMs >= s.expiresAt.getTime()) return s.onExpire;
    return after(s.lastActivityAt, s.autoStopMinutes * MINUTE_MS) ? "stop" : undefined;
  }
  if (s.state === "paused" && s.pausedAt !== null) {
    if (s.deleteOnStop) return "delete";
    const from = byActivity ? s.lastActivityAt : s.pausedAt;
    if (s.autoArchiveDays > 0) {
      if (byActivity && after(from, s.autoDeleteDays * DAY_MS)) return "delete";
      return after(from, s.autoArchiveDays * DAY_MS) ? "archive" : undefined;
    }
    return after(from, s.autoDeleteDays * DAY_MS) ? "delete" : undefined;
  }
  if (s.state === "archived" && s.archivedAt !== null)
    return after(byActivity ? s.lastActivityAt : s.archivedAt, s.autoDeleteDays * DAY_MS)
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
  | "lost"
  | "found"
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
  if (a.clock !== b.clock) parts.push(`clock ${a.clock} -> ${b.clock}`);
  if (a.deleteOnStop !== b.deleteOnStop) parts.push(`delete_on_stop ${a.deleteOnStop} -> ${b.deleteOnStop}`);
  if (a.expiresAt?.getTime() !== b.expiresAt?.getTime())
    parts.push(
      `expires_at ${a.expiresAt?.toISOString() ?? "none"} -> ${b.expiresAt?.toISOString() ?? "none"}`,
    );
  if (a.onExpire !== b.onExpire) parts.push(`on_expire ${a.onExpire} -> ${b.onExpire}`);
  return parts.join(", ");
}

/** A lifecycle in words for the event log. */
export function describeLifecycle(l: LifecycleSettings): string {
  const parts = [
    `${l.type}: auto-stop ${l.autoStopMinutes} min, auto-archive ${l.autoArchiveDays} d, auto-delete ${l.autoDeleteDays} d`,
  ];
  if (l.clock !== "state_change") parts.push(`clock ${l.clock}`);
  if (l.deleteOnStop) parts.push("delete on stop");
  if (l.expiresAt !== null) parts.push(`expires ${l.expiresAt.toISOString()} (${l.onExpire})`);
  return parts.join(", ");
}
