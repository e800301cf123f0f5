import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SnapshotVmRequest, SnapshotVmResponseSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { checkSandboxId, checkSnapshotId, VmNotFoundError, VmStateError } from "../domain/errors.js";

/**
 * Writes a snapshot of a running or paused sandbox into `<snapshotsDir>/<snapshot id>/` and
 * returns its listing's digest for the caller to sign. The sandbox keeps its state.
 */
export async function snapshotVm(
  ctx: VmmContext,
  req: SnapshotVmRequest,
): Promise<MessageInitShape<typeof SnapshotVmResponseSchema>> {
  const id = checkSandboxId(req.sandboxId);
  const snapshotId = checkSnapshotId(req.snapshotId);
  if (!ctx.vms.has(id)) throw new VmNotFoundError(id);
  if (ctx.busy.has(id)) throw new VmStateError(`sandbox '${id}' is being deleted`);
  const started = performance.now();
  const w = await ctx.snapshots.write(snapshotId, ctx.runtime, id);
  const durationMs = Math.round(performance.now() - started);
  ctx.logger.info(
    {
      "sandbox.id": id,
      "snapshot.id": snapshotId,
      durationMs,
      hashMs: Math.round(w.hashMs),
      sizeBytes: w.sizeBytes,
      memory: w.meta.memory,
    },
    "sandbox snapshotted",
  );
  return {
    manifestSha256: w.manifestSha256,
    sizeBytes: BigInt(w.sizeBytes),
    files: w.files.map((f) => ({ name: f.name, sizeBytes: BigInt(f.size), sha256: f.sha256 })),
    memory: w.meta.memory,
    runtime: w.meta.runtime,
    templateId: w.meta.templateId,
    cpuCount: w.meta.cpuCount,
    memoryMib: w.meta.memoryMib,
    durationMs,
  };
}
