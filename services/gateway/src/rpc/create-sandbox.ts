import { create } from "@bufbuild/protobuf";
import {
  type CreateSandboxRequest,
  type CreateSandboxResponse,
  CreateSandboxResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { TemplateNotFoundError } from "../errors.js";
import { fromScheduler } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { schedulerLifecycleValues, toSandbox, toSchedulerLifecycleType } from "./sandbox-view.js";
import { checkEnvVars, checkMetadata, checkTemplateId } from "./validate.js";

export const DEFAULT_TEMPLATE_ID = "base";

/**
 * CreateSandbox: validates, then the scheduler claims a pooled sandbox or places a new one.
 * The lifecycle preset (unspecified = persistent) and explicit values go to the scheduler,
 * which lays the explicit ones over the preset and checks their ranges.
 */
export async function createSandbox(
  deps: RpcDeps,
  req: CreateSandboxRequest,
  opts: CallOptions = {},
): Promise<CreateSandboxResponse> {
  const templateId = req.templateId === "" ? DEFAULT_TEMPLATE_ID : req.templateId;
  checkTemplateId(templateId);
  checkMetadata("metadata", req.metadata);
  checkEnvVars("envVars", req.envVars);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["createSandbox"]>>;
  try {
    res = await deps.scheduler.createSandbox(
      {
        templateId,
        metadata: req.metadata,
        envVars: req.envVars,
        type: toSchedulerLifecycleType(req.type),
        ...schedulerLifecycleValues(req),
        owner: opts.owner ?? "",
      },
      { timeoutMs: deps.limits.createTimeoutMs, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new TemplateNotFoundError(templateId, { cause }));
  }
  if (res.sandbox === undefined) throw new Error("scheduler CreateSandbox answered without a sandbox");
  deps.logger.info(
    { "sandbox.id": res.sandbox.sandboxId, "host.id": res.sandbox.hostId, templateId, pooled: res.pooled },
    "sandbox created",
  );
  return create(CreateSandboxResponseSchema, { sandbox: toSandbox(res.sandbox) });
}
