import { create } from "@bufbuild/protobuf";
import {
  type SnapshotSandboxRequest,
  type SnapshotSandboxResponse,
  SnapshotSandboxResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SandboxNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_SNAPSHOT_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSnapshot } from "./snapshot-view.js";
import { checkMetadata, checkSandboxId, checkSnapshotName } from "./validate.js";

/**
 * SnapshotSandbox: the scheduler has the sandbox's host write the snapshot and the snapshot
 * service sign it. The sandbox keeps running (or stays paused). A taken name is ALREADY_EXISTS.
 */
export async function snapshotSandbox(
  deps: RpcDeps,
  req: SnapshotSandboxRequest,
  opts: CallOptions = {},
): Promise<SnapshotSandboxResponse> {
  checkSandboxId(req.sandboxId);
  checkSnapshotName(req.name);
  checkMetadata("metadata", req.metadata);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["snapshotSandbox"]>>;
  try {
    res = await deps.scheduler.snapshotSandbox(
      { sandboxId: req.sandboxId, name: req.name, metadata: req.metadata },
      { timeoutMs: SCHEDULER_SNAPSHOT_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SandboxNotFoundError(req.sandboxId, { cause }));
  }
  if (res.snapshot === undefined) throw new Error("scheduler SnapshotSandbox answered without a snapshot");
  deps.logger.info(
    {
      "sandbox.id": req.sandboxId,
      "snapshot.id": res.snapshot.snapshotId,
      sizeBytes: Number(res.snapshot.sizeBytes),
      memory: res.snapshot.memory,
    },
    "snapshot taken",
  );
  return create(SnapshotSandboxResponseSchema, { snapshot: toSnapshot(res.snapshot) });
}
