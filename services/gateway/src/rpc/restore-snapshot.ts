import { create } from "@bufbuild/protobuf";
import {
  type RestoreSnapshotRequest,
  type RestoreSnapshotResponse,
  RestoreSnapshotResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SnapshotNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_SNAPSHOT_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSandbox } from "./sandbox-view.js";
import { checkEnvVars, checkMetadata, checkSnapshotRef } from "./validate.js";

/**
 * RestoreSnapshot: a new sandbox from a snapshot (by id or name). The scheduler verifies the
 * signature and the host every file before anything starts; a refusal (unsigned, tampered,
 * truncated, unknown or retired key) is FAILED_PRECONDITION with the scheduler's message
 * intact, so the caller learns which check failed.
 */
export async function restoreSnapshot(
  deps: RpcDeps,
  req: RestoreSnapshotRequest,
  opts: CallOptions = {},
): Promise<RestoreSnapshotResponse> {
  checkSnapshotRef(req.snapshotId);
  checkMetadata("metadata", req.metadata);
  checkEnvVars("envVars", req.envVars);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["restoreSnapshot"]>>;
  try {
    res = await deps.scheduler.restoreSnapshot(
      { snapshotId: req.snapshotId, metadata: req.metadata, envVars: req.envVars },
      { timeoutMs: SCHEDULER_SNAPSHOT_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SnapshotNotFoundError(req.snapshotId, { cause }));
  }
  if (res.sandbox === undefined) throw new Error("scheduler RestoreSnapshot answered without a sandbox");
  deps.logger.info(
    { "sandbox.id": res.sandbox.sandboxId, "snapshot.id": req.snapshotId, "host.id": res.sandbox.hostId },
    "sandbox restored",
  );
  return create(RestoreSnapshotResponseSchema, { sandbox: toSandbox(res.sandbox) });
}
