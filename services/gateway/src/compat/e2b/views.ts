import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Sandbox } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";

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

/** `ListedSandbox` (list items). `endAt` is what the caller asked for, else start + 300 s. */
export function listedSandboxJson(s: Sandbox, endAt: Date | undefined) {
  const startedAt = startedAtOf(s);
  return {
    sandboxID: s.sandboxId,
    templateID: s.templateId,
    clientID: CLIENT_ID,
    cpuCount: s.cpuCount,
    memoryMB: s.memoryMib,
    // Not tracked per sandbox yet.
    diskSizeMB: 0,
    startedAt: startedAt.toISOString(),
    endAt: (endAt ?? new Date(startedAt.getTime() + DEFAULT_TIMEOUT_S * 1000)).toISOString(),
    state: "running" as const,
    envdVersion: ENVD_VERSION,
    metadata: { ...s.metadata },
  };
}

/** `SandboxDetail` (GET /sandboxes/{id}). */
export function sandboxDetailJson(s: Sandbox, endAt: Date | undefined, envdAccessToken: string) {
  return { ...listedSandboxJson(s, endAt), envdAccessToken, domain: null };
}

export function startedAtOf(s: Sandbox): Date {
  return s.createdAt !== undefined ? timestampDate(s.createdAt) : new Date(0);
}
