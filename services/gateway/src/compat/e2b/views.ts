import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type Sandbox, SandboxState, type Snapshot } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { E2bSandboxRow } from "./db.js";
import { onTimeoutOf } from "./lifecycle.js";

/** E2B's deprecated constant client id (infra `consts.ClientID`). */
export const CLIENT_ID = "6532622b";
/** The envd the guest agent implements; the SDK gates features on it (spec §10). */
export const ENVD_VERSION = "0.6.13";
/** E2B's default sandbox timeout, used when nothing else was recorded. */
export const DEFAULT_TIMEOUT_S = 300;

/** `Sandbox` (create 201, connect 200). */
export function sandboxJson(s: Sandbox, envdAccessToken: string) {
  return {
    sandboxID: s.sandboxId,
    templateID: s.templateId,
    clientID: CLIENT_ID,
    envdVersion: ENVD_VERSION,
    envdAccessToken,
    domain: null,
  };
}

/** E2B's two states: a paused sandbox is `paused`, anything else listed is `running`. */
export function e2bStateOf(s: Sandbox): "running" | "paused" {
  return s.state === SandboxState.PAUSED ? "paused" : "running";
}

/**
 * `ListedSandbox` (list items). `endAt`: for a paused sandbox the pause time (E2B's rule),
 * else its deadline (the native lifecycle's expiresAt), else start + 300 s (a sandbox with no
 * deadline, created natively).
 */
export function listedSandboxJson(s: Sandbox, row: E2bSandboxRow | undefined) {
  const startedAt = startedAtOf(s, row);
  const state = e2bStateOf(s);
  const expiresAt = s.lifecycle?.expiresAt;
  const endAt =
    state === "paused" && s.pausedAt !== undefined
      ? timestampDate(s.pausedAt)
      : expiresAt !== undefined
        ? timestampDate(expiresAt)
        : new Date(startedAt.getTime() + DEFAULT_TIMEOUT_S * 1000);
  return {
    sandboxID: s.sandboxId,
    templateID: s.templateId,
    clientID: CLIENT_ID,
    cpuCount: s.cpuCount,
    memoryMB: s.memoryMib,
    // Not tracked per sandbox yet.
    diskSizeMB: 0,
    startedAt: startedAt.toISOString(),
    endAt: endAt.toISOString(),
    state,
    envdVersion: ENVD_VERSION,
    metadata: { ...s.metadata },
  };
}

/** `SandboxDetail` (GET /sandboxes/{id}). */
export function sandboxDetailJson(s: Sandbox, row: E2bSandboxRow | undefined, envdAccessToken: string) {
  return {
    ...listedSandboxJson(s, row),
    envdAccessToken,
    domain: null,
    // Paused sandboxes are resumed by connect only; requests to them are refused (502).
    lifecycle: { autoResume: false, onTimeout: onTimeoutOf(s) },
  };
}

/** `SandboxMetric`: one sample. */
export function sandboxMetricJson(m: {
  at: Date;
  cpuCount: number;
  cpuUsedPct: number;
  memUsedBytes: bigint;
  memTotalBytes: bigint;
  memCacheBytes: bigint;
  diskUsedBytes: bigint;
  diskTotalBytes: bigint;
}) {
  return {
    timestamp: m.at.toISOString(),
    timestampUnix: Math.floor(m.at.getTime() / 1000),
    cpuCount: m.cpuCount,
    cpuUsedPct: m.cpuUsedPct,
    memUsed: Number(m.memUsedBytes),
    memTotal: Number(m.memTotalBytes),
    memCache: Number(m.memCacheBytes),
    diskUsed: Number(m.diskUsedBytes),
    diskTotal: Number(m.diskTotalBytes),
  };
}

/**
 * E2B's `startedAt`: when the E2B create answered (recorded), else when the sandbox was
 * created (a natively created one). A sandbox claimed from the warm pool booted earlier.
 */
export function startedAtOf(s: Sandbox, row: E2bSandboxRow | undefined): Date {
  if (row !== undefined) return row.startedAt;
  return s.createdAt !== undefined ? timestampDate(s.createdAt) : new Date(0);
}

/** `SnapshotInfo`: the id, and the name when one was given (either restores it). */
export function snapshotInfoJson(s: Snapshot) {
  return { snapshotID: s.snapshotId, names: s.name === "" ? [] : [s.name] };
}
