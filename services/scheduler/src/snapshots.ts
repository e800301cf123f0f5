import { Code, ConnectError } from "@connectrpc/connect";
import type { SnapshotVmResponse } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { Context } from "./context.js";
import {
  beginSnapshotDelete,
  deleteSnapshotRow,
  getSandbox,
  insertSnapshot,
  lockSandbox,
  markFailed,
  markRunning,
  markSnapshotReady,
  type SandboxRow,
  type SnapshotRow,
} from "./db/queries.js";
import {
  AlreadyExistsError,
  HostFullError,
  SandboxNotFoundError,
  SnapshotNotFoundError,
  SnapshotRefusedError,
  UpstreamUnavailableError,
  VmmUnavailableError,
  WrongStateError,
} from "./domain/errors.js";
import { newSnapshotId } from "./domain/ids.js";
import { isUnsigned, unsignedError, verificationError } from "./domain/snapshots.js";
import { codeName, deleteVm, errorDetail, logFields, type Owner, reserveOnHost } from "./provision.js";

/**
 * The steps the snapshot RPCs share (SnapshotSandbox, RestoreSnapshot, ForkSandbox,
 * DeleteSnapshot): write + sign, verify + restore, remove.
 */

export const snapshotFields = (s: Pick<SnapshotRow, "id" | "hostId">) => ({
  "snapshot.id": s.id,
  "host.id": s.hostId,
});

/**
 * Has the sandbox's host write a snapshot, has the snapshot service sign its manifest, and
 * records it 'ready'. The sandbox row is locked while its host writes (as PauseSandbox does),
 * so a delete or pause of the sandbox waits. On any failure the row goes and the host is asked
 * (in the background) to remove whatever it wrote.
 */
export async function takeSnapshot(
  ctx: Context,
  sandboxId: string,
  opts: {
    name: string | undefined;
    metadata: Record<string, string>;
    /** The id to write it under (the reaper records it before asking); a new one otherwise. */
    id?: string | undefined;
  },
): Promise<{ snapshot: SnapshotRow; source: SandboxRow }> {
  const source = await getSandbox(ctx.db, sandboxId);
  if (source === undefined) throw new SandboxNotFoundError(sandboxId);
  checkSnapshotable(source);
  const started = ctx.clock.now();
  const created = await insertSnapshot(ctx.db, {
    id: opts.id ?? newSnapshotId(),
    name: opts.name,
    sandboxId,
    templateId: source.templateId,
    hostId: source.hostId,
    runtime: source.runtime,
    cpuCount: source.cpuCount,
    memoryMib: source.memoryMib,
    metadata: opts.metadata,
  });
  if (created === undefined) throw new AlreadyExistsError(`a snapshot named '${opts.name}' already exists`);
  const fields = { ...snapshotFields(created), "sandbox.id": sandboxId };
  let asked = false;
  try {
    const written = await ctx.db.transaction(async (tx) => {
      const cur = await lockSandbox(tx, sandboxId);
      if (cur === undefined) throw new SandboxNotFoundError(sandboxId);
      checkSnapshotable(cur);
      asked = true;
      try {
        return await ctx
          .vmm(cur.vmmUrl)
          .snapshotVm({ sandboxId, snapshotId: created.id }, { timeoutMs: ctx.cfg.snapshotCallTimeoutMs });
      } catch (err) {
        throw snapshotVmError(err, cur);
      }
    });
    const { signature, kid } = await sign(ctx, created, written);
    const ready = await markSnapshotReady(ctx.db, created.id, {
      runtime: written.runtime,
      memory: written.memory,
      manifestSha256: written.manifestSha256,
      sizeBytes: written.sizeBytes,
      files: written.files.map((f) => ({ name: f.name, sizeBytes: f.sizeBytes, sha256: f.sha256 })),
      cpuCount: written.cpuCount,
      memoryMib: written.memoryMib,
      kid,
      signature,
    });
    ctx.logger.info(
      {
        ...fields,
        kid,
        memory: ready.memory,
        sizeBytes: Number(ready.sizeBytes),
        files: ready.files.length,
        writeMs: written.durationMs,
        totalMs: ctx.clock.now() - started,
      },
      "snapshot taken",
    );
    return { snapshot: ready, source };
  } catch (err) {
    ctx.logger.warn({ ...fields, err: errorDetail(err) }, "snapshot failed; removing it");
    await deleteSnapshotRow(ctx.db, created.id).catch((e: unknown) =>
      ctx.logger.error({ ...fields, err: e }, "could not remove the record of a failed snapshot"),
    );
    if (asked)
      ctx.background("cleanup of a failed snapshot", fields, () =>
        ctx
          .vmm(source.vmmUrl)
          .deleteSnapshot({ snapshotId: created.id }, { timeoutMs: ctx.cfg.vmmCallTimeoutMs }),
      );
    throw err;
  }
}

function checkSnapshotable(row: SandboxRow): void {
  if (row.state !== "running" && row.state !== "paused")
    throw new WrongStateError(
      `sandbox '${row.id}' cannot be snapshotted: it is ${row.state} (only running or paused sandboxes can)`,
    );
}

function snapshotVmError(err: unknown, row: SandboxRow): Error {
  const ce = ConnectError.from(err);
  // The host's refusals (the runtime cannot snapshot, the sandbox is not in a state it can
  // snapshot) are the caller's to act on; the rest are worth a retry.
  if (ce.code === Code.FailedPrecondition || ce.code === Code.Unimplemented)
    return new WrongStateError(`host '${row.hostId}' cannot snapshot sandbox '${row.id}': ${ce.rawMessage}`);
  if (ce.code === Code.ResourceExhausted)
    return new HostFullError(`host '${row.hostId}' cannot snapshot sandbox '${row.id}': ${ce.rawMessage}`);
  return new VmmUnavailableError(
    `host '${row.hostId}' could not snapshot sandbox '${row.id}' (${codeName(err)}); try again`,
    { cause: err },
  );
}

async function sign(
  ctx: Context,
  row: SnapshotRow,
  written: SnapshotVmResponse,
): Promise<{ signature: Uint8Array; kid: string }> {
  try {
    const res = await ctx.snapshot.signManifest(
      {
        manifest: {
          sandboxId: row.sandboxId,
          snapshotId: row.id,
          manifestSha256: written.manifestSha256,
          sizeBytes: written.sizeBytes,
          createdAtMs: row.createdAtMs,
        },
      },
      { timeoutMs: ctx.cfg.vmmCallTimeoutMs },
    );
    if (res.signature.length === 0 || res.kid === "") throw new Error("SignManifest returned no signature");
    return res;
  } catch (err) {
    throw new UpstreamUnavailableError(
      `the snapshot service could not sign snapshot ${row.id} (${codeName(err)}); try again`,
      { cause: err },
    );
  }
}

/**
 * Starts a new sandbox from a snapshot. Nothing is reserved or started unless the snapshot is
 * ready, signed, and its signature verifies against the fields recorded here (the snapshot
 * service; an unknown or retired key fails); the host then checks every file against the
 * signed digest before it starts anything.
 */
export async function restoreSnapshot(
  ctx: Context,
  snap: SnapshotRow & { hostLive: boolean },
  owner: Owner,
): Promise<SandboxRow> {
  const fields = snapshotFields(snap);
  const started = ctx.clock.now();
  const kid = await checkSignature(ctx, snap);
  const verifyMs = ctx.clock.now() - started;

  // The files are on the disk of the host that wrote them: only that host can restore them.
  if (!snap.hostLive)
    throw new VmmUnavailableError(
      `snapshot ${snap.id} is stored on host '${snap.hostId}', which is not live; restore it when that host is back`,
    );
  const row = await reserveOnHost(ctx, snap.hostId, `snapshot ${snap.id}`, {
    templateId: snap.templateId,
    cpuCount: snap.cpuCount,
    memoryMib: snap.memoryMib,
    sourceSnapshotId: snap.id,
    ...owner,
  });
  let runtime = "";
  let filesVerifyMs = 0;
  try {
    const res = await ctx.vmm(row.vmmUrl).restoreVm(
      {
        snapshotId: snap.id,
        sandboxId: row.id,
        manifestSha256: snap.manifestSha256,
        sizeBytes: snap.sizeBytes,
        envVars: owner.envVars,
      },
      { timeoutMs: ctx.cfg.snapshotCallTimeoutMs },
    );
    runtime = res.vm?.runtime ?? "";
    filesVerifyMs = res.verifyMs;
  } catch (err) {
    await markFailed(ctx.db, row.id, `RestoreVm: ${errorDetail(err)}`);
    // A refusal starts nothing, but a restore that timed out may still finish: asking to
    // delete an id the host does not have is harmless.
    ctx.background("cleanup after a failed restore", logFields(row), () => deleteVm(ctx, row));
    ctx.logger.warn({ ...fields, ...logFields(row), err: errorDetail(err) }, "restore failed");
    throw restoreVmError(err, snap);
  }
  const running = await markRunning(ctx.db, row.id, runtime);
  if (running === undefined) {
    ctx.background("cleanup of a sandbox deleted while restoring", logFields(row), () => deleteVm(ctx, row));
    throw new SandboxNotFoundError(row.id);
  }
  ctx.logger.info(
    {
      ...fields,
      ...logFields(row),
      kid,
      memory: snap.memory,
      verifyMs,
      filesVerifyMs,
      totalMs: ctx.clock.now() - started,
    },
    "sandbox restored from snapshot",
  );
  return running;
}

/**
 * Restores a snapshot under an existing sandbox's own id (an archived sandbox coming back),
 * after `checkSignature`; the host checks every file before it starts anything. The caller
 * holds the row and has checked the host's room. On failure the host is asked (in the
 * background) to remove whatever it got to, and the error says what the caller can do.
 */
export async function restoreVmAs(
  ctx: Context,
  snap: SnapshotRow,
  row: Pick<SandboxRow, "id" | "hostId" | "vmmUrl" | "envVars">,
): Promise<{ runtime: string; filesVerifyMs: number }> {
  try {
    const res = await ctx.vmm(row.vmmUrl).restoreVm(
      {
        snapshotId: snap.id,
        sandboxId: row.id,
        manifestSha256: snap.manifestSha256,
        sizeBytes: snap.sizeBytes,
        envVars: row.envVars,
      },
      { timeoutMs: ctx.cfg.snapshotCallTimeoutMs },
    );
    return { runtime: res.vm?.runtime ?? "", filesVerifyMs: res.verifyMs };
  } catch (err) {
    ctx.background("cleanup after a failed restore", logFields(row), () => deleteVm(ctx, row));
    ctx.logger.warn(
      { ...snapshotFields(snap), ...logFields(row), err: errorDetail(err) },
      "restore under the sandbox's own id failed",
    );
    throw restoreVmError(err, snap);
  }
}

/**
 * The checks every restore makes before anything is reserved or started: the snapshot is
 * ready and signed, and the snapshot service verifies its signature over the fields recorded
 * here (an unknown or retired key fails). Returns the key id.
 */
export async function checkSignature(ctx: Context, snap: SnapshotRow): Promise<string> {
  const fields = snapshotFields(snap);
  if (snap.state === "creating")
    throw new SnapshotRefusedError(`snapshot ${snap.id} is still being written; try again shortly`);
  if (snap.state === "deleting") throw new SnapshotRefusedError(`snapshot ${snap.id} is being deleted`);
  if (isUnsigned(snap)) {
    ctx.logger.warn(fields, "restore refused: snapshot is unsigned");
    throw unsignedError(snap.id);
  }
  const kid = snap.kid!;
  const started = ctx.clock.now();
  const verdict = await verify(ctx, snap, kid);
  ctx.logger.info(
    { ...fields, kid, valid: verdict.valid, reason: verdict.reason, verifyMs: ctx.clock.now() - started },
    "snapshot signature checked",
  );
  if (!verdict.valid) throw verificationError(snap.id, verdict.reason, kid);
  return kid;
}

async function verify(
  ctx: Context,
  snap: SnapshotRow,
  kid: string,
): Promise<{ valid: boolean; reason: string }> {
  try {
    return await ctx.snapshot.verifyManifest(
      {
        manifest: {
          sandboxId: snap.sandboxId,
          snapshotId: snap.id,
          manifestSha256: snap.manifestSha256,
          sizeBytes: snap.sizeBytes,
          createdAtMs: snap.createdAtMs,
        },
        signature: snap.signature!,
        kid,
      },
      { timeoutMs: ctx.cfg.vmmCallTimeoutMs },
    );
  } catch (err) {
    // A stored signature or kid the service rejects as malformed was not made by it.
    const ce = ConnectError.from(err);
    if (ce.code === Code.InvalidArgument) return { valid: false, reason: ce.rawMessage };
    throw new UpstreamUnavailableError(
      `the snapshot service could not verify snapshot ${snap.id} (${codeName(err)}); try again`,
      { cause: err },
    );
  }
}

export function restoreVmError(err: unknown, snap: SnapshotRow): Error {
  const ce = ConnectError.from(err);
  switch (ce.code) {
    // The host's verdict on the files (which one is missing, changed, truncated) goes to the
    // caller as it is.
    case Code.FailedPrecondition:
      return new SnapshotRefusedError(ce.rawMessage, { cause: err });
    case Code.NotFound:
      return new SnapshotRefusedError(
        `snapshot ${snap.id}: its files are not on host '${snap.hostId}' any more`,
        { cause: err },
      );
    case Code.ResourceExhausted:
      return new HostFullError(
        `host '${snap.hostId}' has no room to restore snapshot ${snap.id}: ${ce.rawMessage}`,
      );
    default:
      return new VmmUnavailableError(
        `host '${snap.hostId}' could not restore snapshot ${snap.id} (${codeName(err)}); try again`,
        { cause: err },
      );
  }
}

/**
 * Removes a snapshot's files on its host, then its record. The host must be live (the files
 * are only there); a failed host call leaves the row 'deleting' (hidden) for a retry.
 */
export async function removeSnapshot(ctx: Context, snap: SnapshotRow & { hostLive: boolean }): Promise<void> {
  if (snap.state === "creating")
    throw new SnapshotRefusedError(`snapshot ${snap.id} is still being written; delete it once it is ready`);
  if (!snap.hostLive)
    throw new VmmUnavailableError(
      `snapshot ${snap.id} is stored on host '${snap.hostId}', which is not live; delete it again when that host is back`,
    );
  const row = await beginSnapshotDelete(ctx.db, snap.id);
  if (row === undefined) throw new SnapshotNotFoundError(snap.id);
  try {
    await ctx
      .vmm(row.vmmUrl)
      .deleteSnapshot({ snapshotId: row.id }, { timeoutMs: ctx.cfg.snapshotCallTimeoutMs });
  } catch (err) {
    throw new VmmUnavailableError(
      `host '${row.hostId}' could not delete snapshot ${row.id} (${codeName(err)}); try again`,
      { cause: err },
    );
  }
  await deleteSnapshotRow(ctx.db, row.id);
  ctx.logger.info(snapshotFields(row), "snapshot deleted");
}
