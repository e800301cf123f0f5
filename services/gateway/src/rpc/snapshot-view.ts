import { create } from "@bufbuild/protobuf";
import { type Snapshot, SnapshotSchema } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { SnapshotRecord } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";

/**
 * What a restore brings back, in words: the API says it plainly rather than leaving callers to
 * guess from the runtime (issue 6: the jail's restore is honest about restarting processes).
 */
export function restoreSemantics(memory: boolean): string {
  return memory
    ? "memory, disk and share: processes continue where they were"
    : "disk and share only: processes start again, as after a reboot";
}

/** The public view of a scheduler snapshot record; the host it lives on stays internal. */
export function toSnapshot(r: SnapshotRecord): Snapshot {
  return create(SnapshotSchema, {
    snapshotId: r.snapshotId,
    sandboxId: r.sandboxId,
    templateId: r.templateId,
    name: r.name,
    runtime: r.runtime,
    memory: r.memory,
    restoreSemantics: restoreSemantics(r.memory),
    sizeBytes: r.sizeBytes,
    manifestSha256: r.manifestSha256,
    kid: r.kid,
    signature: r.signature,
    ...(r.createdAt !== undefined ? { createdAt: r.createdAt } : {}),
    files: r.files.map((f) => ({ name: f.name, sizeBytes: f.sizeBytes, sha256: f.sha256 })),
    metadata: { ...r.metadata },
  });
}
