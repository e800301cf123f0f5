import type { MessageInitShape } from "@bufbuild/protobuf";
import type { RestoreVmRequest, RestoreVmResponseSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import {
  checkSandboxId,
  checkSnapshotId,
  GuestUnavailableError,
  HostFullError,
  InvalidArgumentError,
  SnapshotInvalidError,
  TemplateNotFoundError,
  VmExistsError,
} from "../domain/errors.js";
import { resolveTemplate } from "../template/user-templates.js";
import { bringUp } from "./bring-up.js";

/**
 * Starts a new sandbox from a stored snapshot. Every file is checked against the signed
 * listing digest and size first; nothing of the sandbox exists (no folder, cgroup, process)
 * until that passed. The runtime restores under the snapshot's lock, so a concurrent
 * DeleteSnapshot waits until the files have been read.
 */
export async function restoreVm(
  ctx: VmmContext,
  req: RestoreVmRequest,
): Promise<MessageInitShape<typeof RestoreVmResponseSchema>> {
  const id = checkSandboxId(req.sandboxId);
  const snapshotId = checkSnapshotId(req.snapshotId);
  if (!/^[0-9a-f]{64}$/.test(req.manifestSha256))
    throw new InvalidArgumentError("manifest_sha256 must be 64 lower-case hex digits");
  if (ctx.vms.has(id) || ctx.busy.has(id)) throw new VmExistsError(id);
  if (ctx.vms.size + ctx.busy.size >= ctx.cfg.capacitySandboxes)
    throw new HostFullError(ctx.cfg.capacitySandboxes);
  ctx.busy.add(id);
  const started = performance.now();
  try {
    const { vm, verifyMs, meta, start } = await ctx.snapshots.withLock(snapshotId, async () => {
      const v = await ctx.snapshots.verify(snapshotId, req.manifestSha256, req.sizeBytes);
      if (v.meta.runtime !== ctx.runtime.name)
        throw new SnapshotInvalidError(snapshotId, [
          `made by the ${v.meta.runtime} runtime; this host runs ${ctx.runtime.name}`,
        ]);
      const resolved = await resolveTemplate(ctx.cfg.cacheDir, v.meta.templateId, ctx.cfg.debianMirror).catch(
        (err: Error) => {
          throw new GuestUnavailableError(`template '${v.meta.templateId}' is broken: ${err.message}`, {
            cause: err,
          });
        },
      );
      if (!resolved) throw new TemplateNotFoundError(v.meta.templateId);
      const { image: template, start: startSpec } = resolved;
      const restored = await ctx.runtime.restore(
        {
          sandboxId: id,
          template,
          cpuCount: v.meta.cpuCount,
          memoryMib: v.meta.memoryMib,
          background: false,
        },
        v.dir,
        { beforeStart: (share) => ctx.snapshots.extractShare(v.dir, share) },
      );
      return { vm: restored, verifyMs: Math.round(v.verifyMs), meta: v.meta, start: startSpec };
    });
    await bringUp(ctx, vm, {
      templateId: meta.templateId,
      envVars: req.envVars,
      // Restarted (jail) or carried on (memory snapshot), the start command must serve.
      start,
      background: false,
    });
    const bootMs = Math.round(performance.now() - started);
    ctx.vms.set(id, { vm, bootMs, cpuCount: meta.cpuCount, memoryMib: meta.memoryMib });
    ctx.logger.info(
      {
        "sandbox.id": id,
        "snapshot.id": snapshotId,
        template: meta.templateId,
        verifyMs,
        durationMs: bootMs,
        memory: meta.memory,
      },
      "sandbox restored",
    );
    return {
      vm: { sandboxId: id, templateId: meta.templateId, runtime: ctx.runtime.name, bootMs },
      verifyMs,
    };
  } finally {
    ctx.busy.delete(id);
  }
}
