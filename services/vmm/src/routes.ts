import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "./context.js";
import { toConnectError } from "./domain/errors.js";
import { archiveSnapshot } from "./rpc/archive-snapshot.js";
import { buildTemplate } from "./rpc/build-template.js";
import { configureVm } from "./rpc/configure-vm.js";
import { createVm } from "./rpc/create-vm.js";
import { deleteArchive } from "./rpc/delete-archive.js";
import { deleteSnapshot } from "./rpc/delete-snapshot.js";
import { deleteTemplate } from "./rpc/delete-template.js";
import { deleteVm } from "./rpc/delete-vm.js";
import { getHostInfo } from "./rpc/get-host-info.js";
import { getVmMetrics } from "./rpc/get-vm-metrics.js";
import { listVms } from "./rpc/list-vms.js";
import { pauseVm } from "./rpc/pause-vm.js";
import { restoreVm } from "./rpc/restore-vm.js";
import { resumeVm } from "./rpc/resume-vm.js";
import { snapshotVm } from "./rpc/snapshot-vm.js";
import { unarchiveSnapshot } from "./rpc/unarchive-snapshot.js";

/** Wraps a handler so domain errors leave as Connect errors, and unexpected ones are logged. */
function edge<A extends unknown[], R>(ctx: VmmContext, name: string, fn: (...a: A) => Promise<R> | R) {
  return async (...a: A): Promise<R> => {
    try {
      return await fn(...a);
    } catch (err) {
      const ce = toConnectError(err);
      if (ce.code === 13) ctx.logger.error({ rpc: name, err }, "internal error");
      throw ce;
    }
  };
}

/** edge for a server-streaming handler: errors thrown while streaming are mapped the same way. */
function edgeStream<A extends unknown[], R>(
  ctx: VmmContext,
  name: string,
  fn: (...a: A) => AsyncIterable<R>,
) {
  return async function* (...a: A): AsyncGenerator<R> {
    try {
      yield* fn(...a);
    } catch (err) {
      const ce = toConnectError(err);
      if (ce.code === 13) ctx.logger.error({ rpc: name, err }, "internal error");
      throw ce;
    }
  };
}

export function vmmImpl(ctx: VmmContext): ServiceImpl<typeof VmmService> {
  return {
    createVm: edge(ctx, "CreateVm", (req) => createVm(ctx, req)),
    deleteVm: edge(ctx, "DeleteVm", (req) => deleteVm(ctx, req)),
    configureVm: edge(ctx, "ConfigureVm", (req) => configureVm(ctx, req)),
    listVms: edge(ctx, "ListVms", () => listVms(ctx)),
    getHostInfo: edge(ctx, "GetHostInfo", () => getHostInfo(ctx)),
    pauseVm: edge(ctx, "PauseVm", (req) => pauseVm(ctx, req)),
    resumeVm: edge(ctx, "ResumeVm", (req) => resumeVm(ctx, req)),
    getVmMetrics: edge(ctx, "GetVmMetrics", (req) => getVmMetrics(ctx, req)),
    snapshotVm: edge(ctx, "SnapshotVm", (req) => snapshotVm(ctx, req)),
    restoreVm: edge(ctx, "RestoreVm", (req) => restoreVm(ctx, req)),
    deleteSnapshot: edge(ctx, "DeleteSnapshot", (req) => deleteSnapshot(ctx, req)),
    archiveSnapshot: edge(ctx, "ArchiveSnapshot", (req) => archiveSnapshot(ctx, req)),
    unarchiveSnapshot: edgeStream(ctx, "UnarchiveSnapshot", (req) => unarchiveSnapshot(ctx, req)),
    deleteArchive: edge(ctx, "DeleteArchive", (req) => deleteArchive(ctx, req)),
    buildTemplate: edgeStream(ctx, "BuildTemplate", (req, hc) => buildTemplate(ctx, req, hc.signal)),
    deleteTemplate: edge(ctx, "DeleteTemplate", (req) => deleteTemplate(ctx, req)),
  };
}

export function vmmRoutes(ctx: VmmContext) {
  return (router: ConnectRouter) => router.service(VmmService, vmmImpl(ctx));
}
