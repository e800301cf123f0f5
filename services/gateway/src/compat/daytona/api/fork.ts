import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import {
  DeleteSandboxRequestSchema,
  ForkSandboxRequestSchema,
  type Sandbox,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import {
  ERROR_TABLE,
  type ErrorKind,
  FailedPreconditionError,
  GatewayError,
  InvalidArgumentError,
} from "../../../errors.js";
import { deleteSandbox } from "../../../rpc/delete-sandbox.js";
import { forkSandbox } from "../../../rpc/fork-sandbox.js";
import { daytonaBody, optStr } from "../body.js";
import { type DaytonaContext, requestOrigin } from "../context.js";
import { type DaytonaRow, insertDaytonaSandbox, nameTaken } from "../db.js";
import { fullDto, type IdParams, ownedSandbox } from "./common.js";
import { NAME_RE } from "./create.js";

/** States a sandbox can be forked from: running, or paused underneath (stop and archive). */
const FORKABLE: ReadonlySet<string> = new Set(["started", "stopped", "archived", "paused"]);

/**
 * `POST /sandbox/{idOrName}/fork` `{name?}` (SDK `sandbox.fork({name})`): a native fork with
 * one clone, recorded as a new Daytona sandbox of the same owner, already `started`. The clone
 * keeps the source's settings (snapshot, labels, env, resources, network; the native fork
 * copies the lifecycle, so the intervals, and the organization tag) but gets
 * its own name (the given one, else its id) and preview token. The source keeps running. On
 * the jail runtime the clone has the source's disk and share; its processes start afresh.
 */
export async function forkRoute(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.post<IdParams>("/sandbox/:idOrName/fork", async (req) => {
    const b = daytonaBody(req.body);
    const name = optStr(b, "name");
    if (name !== undefined && !NAME_RE.test(name))
      throw new InvalidArgumentError(
        "name must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
      );
    const source = await ownedSandbox(ctx, req, req.params.idOrName);
    if (!FORKABLE.has(source.state))
      throw new FailedPreconditionError(`Sandbox ${source.sandbox_id} is ${source.state}; cannot fork it`);
    ctx.deps.activity.touch(source.sandbox_id);
    const owner = req.daytonaOwner;
    // Checked before the (slow) fork; the insert below settles races.
    if (name !== undefined && (await nameTaken(ctx.db, owner, name)))
      throw new GatewayError("already_exists", `Sandbox with name ${name} already exists`);

    const res = await forkSandbox(
      ctx.deps,
      create(ForkSandboxRequestSchema, { sandboxId: source.sandbox_id, count: 1, metadata: {} }),
    );
    const result = res.results[0];
    if (result?.sandbox === undefined) {
      const kind: ErrorKind =
        result !== undefined && Object.hasOwn(ERROR_TABLE, result.errorCode)
          ? (result.errorCode as ErrorKind)
          : "internal";
      throw new GatewayError(kind, result?.error || "fork failed");
    }
    const clone = result.sandbox;
    let row: DaytonaRow | undefined;
    try {
      row = await insertDaytonaSandbox(ctx.db, cloneRow(source, clone, name));
    } catch (err) {
      await discard(ctx, clone.sandboxId);
      throw err;
    }
    if (row === undefined) {
      await discard(ctx, clone.sandboxId);
      throw new GatewayError("already_exists", `Sandbox with name ${name ?? clone.sandboxId} already exists`);
    }
    ctx.logger.info({ "sandbox.id": clone.sandboxId, source: source.sandbox_id }, "daytona sandbox forked");
    ctx.events.created(row, requestOrigin(req), clone);
    return fullDto(req, row, clone);
  });
}

function cloneRow(source: DaytonaRow, clone: Sandbox, name: string | undefined) {
  return {
    sandbox_id: clone.sandboxId,
    owner_sha256: source.owner_sha256,
    name: name ?? clone.sandboxId,
    snapshot: source.snapshot,
    os_user: source.os_user,
    labels: { ...source.labels },
    env: { ...source.env },
    cpu: clone.cpuCount,
    memory_gib: Math.max(1, Math.round(clone.memoryMib / 1024)),
    disk_gib: source.disk_gib,
    public: source.public,
    network_block_all: source.network_block_all,
    network_allow_list: source.network_allow_list,
    target: source.target,
    state: "started" as const,
    preview_token: randomBytes(24).toString("base64url"),
  };
}

async function discard(ctx: DaytonaContext, sandboxId: string): Promise<void> {
  await deleteSandbox(ctx.deps, create(DeleteSandboxRequestSchema, { sandboxId })).catch((err: unknown) =>
    ctx.logger.error({ err, "sandbox.id": sandboxId }, "cannot delete a fork clone that was not recorded"),
  );
}
