import type { ConnectRouter, HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { SandboxService } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { toConnectError } from "./errors.js";
import { requestIdOf } from "./request-id.js";
import { createSandbox } from "./rpc/create-sandbox.js";
import { deleteSandbox } from "./rpc/delete-sandbox.js";
import { deleteSnapshot } from "./rpc/delete-snapshot.js";
import type { RpcDeps } from "./rpc/deps.js";
import { exec } from "./rpc/exec.js";
import { execStream } from "./rpc/exec-stream.js";
import { forkSandbox } from "./rpc/fork-sandbox.js";
import { getSandbox } from "./rpc/get-sandbox.js";
import { getSandboxMetrics } from "./rpc/get-sandbox-metrics.js";
import { getSnapshot } from "./rpc/get-snapshot.js";
import { listFiles } from "./rpc/list-files.js";
import { listSandboxes } from "./rpc/list-sandboxes.js";
import { listSnapshotKeys } from "./rpc/list-snapshot-keys.js";
import { listSnapshots } from "./rpc/list-snapshots.js";
import { pauseSandbox } from "./rpc/pause-sandbox.js";
import { readFile } from "./rpc/read-file.js";
import { restoreSnapshot } from "./rpc/restore-snapshot.js";
import { resumeSandbox } from "./rpc/resume-sandbox.js";
import { snapshotSandbox } from "./rpc/snapshot-sandbox.js";
import { writeFile } from "./rpc/write-file.js";

/** Response header set when Exec dropped output over the limit (the proto has no field). */
export const TRUNCATED_HEADER = "dnah-output-truncated";

/**
 * The Connect surface of SandboxService: the same rpc/ functions as REST, errors through the
 * one table. Authentication happened before (the onRequest hook).
 */
export function sandboxRoutes(deps: RpcDeps): (router: ConnectRouter) => void {
  const fail = (err: unknown, ctx: HandlerContext) =>
    toConnectError(err, { logger: deps.logger, requestId: requestIdOf(ctx.requestHeader) });
  const unary =
    <Req, Res>(fn: (deps: RpcDeps, req: Req, opts: { signal: AbortSignal }) => Promise<Res>) =>
    async (req: Req, ctx: HandlerContext): Promise<Res> => {
      try {
        return await fn(deps, req, { signal: ctx.signal });
      } catch (err) {
        throw fail(err, ctx);
      }
    };
  const impl: ServiceImpl<typeof SandboxService> = {
    createSandbox: unary(createSandbox),
    getSandbox: unary(getSandbox),
    listSandboxes: unary(listSandboxes),
    deleteSandbox: unary(deleteSandbox),
    async exec(req, ctx) {
      try {
        const res = await exec(deps, req, { signal: ctx.signal });
        if (res.truncated) ctx.responseHeader.set(TRUNCATED_HEADER, "true");
        return res.response;
      } catch (err) {
        throw fail(err, ctx);
      }
    },
    async *execStream(req, ctx) {
      try {
        yield* execStream(deps, req, { signal: ctx.signal });
      } catch (err) {
        throw fail(err, ctx);
      }
    },
    writeFile: unary(writeFile),
    readFile: unary(readFile),
    listFiles: unary(listFiles),
    pauseSandbox: unary(pauseSandbox),
    resumeSandbox: unary(resumeSandbox),
    getSandboxMetrics: unary(getSandboxMetrics),
    snapshotSandbox: unary(snapshotSandbox),
    restoreSnapshot: unary(restoreSnapshot),
    forkSandbox: unary(forkSandbox),
    getSnapshot: unary(getSnapshot),
    listSnapshots: unary(listSnapshots),
    deleteSnapshot: unary(deleteSnapshot),
    listSnapshotKeys: unary(listSnapshotKeys),
  };
  return (router) => router.service(SandboxService, impl);
}
