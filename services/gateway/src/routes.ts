import {
  type ConnectRouter,
  createContextKey,
  type HandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";
import { SandboxService } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { activityRule } from "./activity-routes.js";
import { toConnectError } from "./errors.js";
import { requestIdOf } from "./request-id.js";
import { archiveSandbox } from "./rpc/archive-sandbox.js";
import { createSandbox } from "./rpc/create-sandbox.js";
import { deleteSandbox } from "./rpc/delete-sandbox.js";
import { deleteSnapshot } from "./rpc/delete-snapshot.js";
import type { CallOptions, RpcDeps } from "./rpc/deps.js";
import { exec } from "./rpc/exec.js";
import { execStream } from "./rpc/exec-stream.js";
import { forkSandbox } from "./rpc/fork-sandbox.js";
import { getSandbox } from "./rpc/get-sandbox.js";
import { getSandboxMetrics } from "./rpc/get-sandbox-metrics.js";
import { getSnapshot } from "./rpc/get-snapshot.js";
import { listFiles } from "./rpc/list-files.js";
import { listSandboxEvents } from "./rpc/list-sandbox-events.js";
import { listSandboxes } from "./rpc/list-sandboxes.js";
import { listSnapshotKeys } from "./rpc/list-snapshot-keys.js";
import { listSnapshots } from "./rpc/list-snapshots.js";
import { pauseSandbox } from "./rpc/pause-sandbox.js";
import { readFile } from "./rpc/read-file.js";
import { restoreSnapshot } from "./rpc/restore-snapshot.js";
import { resumeSandbox } from "./rpc/resume-sandbox.js";
import { snapshotSandbox } from "./rpc/snapshot-sandbox.js";
import { updateLifecycle } from "./rpc/update-lifecycle.js";
import { writeFile } from "./rpc/write-file.js";

/** The caller's API key id, set per request by the server's `contextValues` (after auth). */
export const API_KEY_ID = createContextKey("", { description: "the caller's API key id" });

/** Response header set when Exec dropped output over the limit (the proto has no field). */
export const TRUNCATED_HEADER = "dnah-output-truncated";

/**
 * The Connect surface of SandboxService: the same rpc/ functions as REST, errors through the
 * one table. Authentication happened before (the onRequest hook).
 */
export function sandboxRoutes(deps: RpcDeps): (router: ConnectRouter) => void {
  const fail = (err: unknown, ctx: HandlerContext) =>
    toConnectError(err, { logger: deps.logger, requestId: requestIdOf(ctx.requestHeader) });
  /**
   * Holds the request's sandbox active for the call when ACTIVITY_ROUTES counts the method
   * (after validation: the field must name a sandbox); else a no-op release.
   */
  const held = (method: Method, req: object): (() => void) => {
    const param = counted[method];
    if (param === undefined) return () => {};
    const id = (req as Record<string, unknown>)[param];
    return typeof id === "string" ? deps.activity.hold(id) : () => {};
  };
  const unary =
    <Req extends object, Res>(
      method: Method,
      fn: (deps: RpcDeps, req: Req, opts: CallOptions) => Promise<Res>,
    ) =>
    async (req: Req, ctx: HandlerContext): Promise<Res> => {
      const release = held(method, req);
      try {
        return await fn(deps, req, { signal: ctx.signal, owner: ctx.values.get(API_KEY_ID) });
      } catch (err) {
        throw fail(err, ctx);
      } finally {
        release();
      }
    };
  const impl: ServiceImpl<typeof SandboxService> = {
    createSandbox: unary("createSandbox", createSandbox),
    getSandbox: unary("getSandbox", getSandbox),
    listSandboxes: unary("listSandboxes", listSandboxes),
    deleteSandbox: unary("deleteSandbox", deleteSandbox),
    async exec(req, ctx) {
      const release = held("exec", req);
      try {
        const res = await exec(deps, req, { signal: ctx.signal });
        if (res.truncated) ctx.responseHeader.set(TRUNCATED_HEADER, "true");
        return res.response;
      } catch (err) {
        throw fail(err, ctx);
      } finally {
        release();
      }
    },
    async *execStream(req, ctx) {
      const release = held("execStream", req);
      try {
        yield* execStream(deps, req, { signal: ctx.signal });
      } catch (err) {
        throw fail(err, ctx);
      } finally {
        release();
      }
    },
    writeFile: unary("writeFile", writeFile),
    readFile: unary("readFile", readFile),
    listFiles: unary("listFiles", listFiles),
    pauseSandbox: unary("pauseSandbox", pauseSandbox),
    archiveSandbox: unary("archiveSandbox", archiveSandbox),
    resumeSandbox: unary("resumeSandbox", resumeSandbox),
    getSandboxMetrics: unary("getSandboxMetrics", getSandboxMetrics),
    snapshotSandbox: unary("snapshotSandbox", snapshotSandbox),
    restoreSnapshot: unary("restoreSnapshot", restoreSnapshot),
    forkSandbox: unary("forkSandbox", forkSandbox),
    getSnapshot: unary("getSnapshot", getSnapshot),
    listSnapshots: unary("listSnapshots", listSnapshots),
    deleteSnapshot: unary("deleteSnapshot", deleteSnapshot),
    listSnapshotKeys: unary("listSnapshotKeys", listSnapshotKeys),
    updateLifecycle: unary("updateLifecycle", updateLifecycle),
    listSandboxEvents: unary("listSandboxEvents", listSandboxEvents),
  };
  return (router) => router.service(SandboxService, impl);
}

type Method = keyof typeof SandboxService.method;

/** Each counted method's sandbox field, from ACTIVITY_ROUTES; a method it lacks fails at load. */
const counted: Partial<Record<Method, string>> = (() => {
  const out: Partial<Record<Method, string>> = {};
  for (const [local, m] of Object.entries(SandboxService.method) as [Method, { name: string }][]) {
    const rule = activityRule("POST", `/${SandboxService.typeName}/${m.name}`);
    if (rule === undefined) throw new Error(`${SandboxService.typeName}/${m.name} is not in ACTIVITY_ROUTES`);
    if (rule === "handler") throw new Error(`${m.name}: Connect methods name their sandbox by a field`);
    if (rule !== false) out[local] = rule.param;
  }
  return out;
})();
