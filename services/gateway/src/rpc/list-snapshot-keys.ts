import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type ListSnapshotKeysRequest,
  type ListSnapshotKeysResponse,
  ListSnapshotKeysResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { PublicKey } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import { DeadlineExceededError, UnavailableError } from "../errors.js";
import { SCHEDULER_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";

export type SnapshotKeyStatus = "active" | "verifying" | "retired";

/** One word per key: it signs new snapshots, it only verifies old ones, or it is refused. */
export function keyStatus(k: Pick<PublicKey, "active" | "retiredAt">): SnapshotKeyStatus {
  if (k.retiredAt !== undefined) return "retired";
  return k.active ? "active" : "verifying";
}

/**
 * ListSnapshotKeys: the snapshot service's public keys, so that anyone can check a snapshot's
 * signature themselves, and which keys are retired (their snapshots are refused at restore).
 */
export async function listSnapshotKeys(
  deps: RpcDeps,
  _req: ListSnapshotKeysRequest,
  opts: CallOptions = {},
): Promise<ListSnapshotKeysResponse> {
  let res: Awaited<ReturnType<RpcDeps["snapshot"]["listKeys"]>>;
  try {
    res = await deps.snapshot.listKeys(
      {},
      { timeoutMs: SCHEDULER_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.Unavailable)
      throw new UnavailableError("snapshot service unavailable; retry", { cause: err });
    if (err instanceof ConnectError && err.code === Code.DeadlineExceeded)
      throw new DeadlineExceededError("snapshot service did not answer in time", { cause: err });
    // Anything else is the gateway's problem, not the caller's: the table makes it internal.
    throw err;
  }
  return create(ListSnapshotKeysResponseSchema, {
    keys: res.keys.map((k) => ({
      kid: k.kid,
      publicKey: k.publicKey,
      status: keyStatus(k),
      ...(k.createdAt !== undefined ? { createdAt: k.createdAt } : {}),
      ...(k.retiredAt !== undefined ? { retiredAt: k.retiredAt } : {}),
    })),
  });
}
