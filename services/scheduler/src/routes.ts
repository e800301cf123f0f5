import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "./context.js";
import { InvalidArgumentError, toConnectError } from "./domain/errors.js";
import { archiveSandbox } from "./rpc/archive-sandbox.js";
import { buildTemplate } from "./rpc/build-template.js";
import { cancelTemplateBuild } from "./rpc/cancel-template-build.js";
import { createSandbox } from "./rpc/create-sandbox.js";
import { deleteSandbox } from "./rpc/delete-sandbox.js";
import { deleteSnapshot } from "./rpc/delete-snapshot.js";
import { deleteTemplate } from "./rpc/delete-template.js";
import { forkSandbox } from "./rpc/fork-sandbox.js";
import { getSandbox } from "./rpc/get-sandbox.js";
import { getSandboxMetrics } from "./rpc/get-sandbox-metrics.js";
import { getSnapshot } from "./rpc/get-snapshot.js";
import { getTemplate } from "./rpc/get-template.js";
import { getTemplateBuild } from "./rpc/get-template-build.js";
import { hasTemplateFiles } from "./rpc/has-template-files.js";
import { heartbeat } from "./rpc/heartbeat.js";
import { listHosts } from "./rpc/list-hosts.js";
import { listSandboxEvents } from "./rpc/list-sandbox-events.js";
import { listSandboxes } from "./rpc/list-sandboxes.js";
import { listSnapshots } from "./rpc/list-snapshots.js";
import { listTemplates } from "./rpc/list-templates.js";
import { pauseSandbox } from "./rpc/pause-sandbox.js";
import { putTemplateFiles } from "./rpc/put-template-files.js";
import { recordActivity } from "./rpc/record-activity.js";
import { registerHost } from "./rpc/register-host.js";
import { restoreSnapshot } from "./rpc/restore-snapshot.js";
import { resumeSandbox } from "./rpc/resume-sandbox.js";
import { setHostDraining } from "./rpc/set-host-draining.js";
import { snapshotSandbox } from "./rpc/snapshot-sandbox.js";
import { updateLifecycle } from "./rpc/update-lifecycle.js";

/** Whether any string in a request message (nested messages, lists, maps) holds a NUL. */
function holdsNul(v: unknown, depth = 0): boolean {
  if (typeof v === "string") return v.includes("\0");
  if (depth > 16 || v === null || typeof v !== "object" || v instanceof Uint8Array) return false;
  return Object.values(v).some((x) => holdsNul(x, depth + 1));
}

/** Every SchedulerService RPC, each passing its errors through the one toConnectError. */
export function createRoutes(ctx: Context): ServiceImpl<typeof SchedulerService> {
  const edge =
    <Req, Res>(rpc: string, fn: (ctx: Context, req: Req, call: HandlerContext) => Promise<Res>) =>
    async (req: Req, call: HandlerContext): Promise<Res> => {
      try {
        // Postgres text cannot hold NUL: refuse it in any field before a query fails on it.
        if (holdsNul(req)) throw new InvalidArgumentError("a text field contains a NUL character");
        return await fn(ctx, req, call);
      } catch (err) {
        throw toConnectError(err, ctx.logger, { rpc });
      }
    };
  return {
    createSandbox: edge("CreateSandbox", createSandbox),
    getSandbox: edge("GetSandbox", getSandbox),
    listSandboxes: edge("ListSandboxes", listSandboxes),
    deleteSandbox: edge("DeleteSandbox", deleteSandbox),
    getTemplate: edge("GetTemplate", getTemplate),
    registerHost: edge("RegisterHost", registerHost),
    heartbeat: edge("Heartbeat", heartbeat),
    pauseSandbox: edge("PauseSandbox", pauseSandbox),
    resumeSandbox: edge("ResumeSandbox", resumeSandbox),
    getSandboxMetrics: edge("GetSandboxMetrics", getSandboxMetrics),
    snapshotSandbox: edge("SnapshotSandbox", snapshotSandbox),
    restoreSnapshot: edge("RestoreSnapshot", restoreSnapshot),
    forkSandbox: edge("ForkSandbox", forkSandbox),
    getSnapshot: edge("GetSnapshot", getSnapshot),
    listSnapshots: edge("ListSnapshots", listSnapshots),
    deleteSnapshot: edge("DeleteSnapshot", deleteSnapshot),
    updateLifecycle: edge("UpdateLifecycle", updateLifecycle),
    listSandboxEvents: edge("ListSandboxEvents", listSandboxEvents),
    recordActivity: edge("RecordActivity", recordActivity),
    archiveSandbox: edge("ArchiveSandbox", archiveSandbox),
    listHosts: edge("ListHosts", listHosts),
    setHostDraining: edge("SetHostDraining", setHostDraining),
    putTemplateFiles: edge("PutTemplateFiles", putTemplateFiles),
    hasTemplateFiles: edge("HasTemplateFiles", hasTemplateFiles),
    buildTemplate: edge("BuildTemplate", buildTemplate),
    getTemplateBuild: edge("GetTemplateBuild", getTemplateBuild),
    cancelTemplateBuild: edge("CancelTemplateBuild", cancelTemplateBuild),
    listTemplates: edge("ListTemplates", listTemplates),
    deleteTemplate: edge("DeleteTemplate", deleteTemplate),
  };
}
