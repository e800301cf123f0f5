import type { Logger } from "@dnah/platform";
import type { FastifyRequest } from "fastify";
import type { RpcDeps } from "../../../rpc/deps.js";

/**
 * What the toolbox routes need from the Daytona surface that mounts them. `resolve` throws a
 * `not_found` GatewayError unless the request's id names a live Daytona sandbox
 * (`failed_precondition` when it is stopped), from what the surface's auth hook found for this
 * request; `touch` records activity for auto-stop.
 */
export interface ToolboxContext {
  deps: RpcDeps;
  logger: Logger;
  resolve(req: FastifyRequest, sandboxId: string): Promise<void>;
  touch(sandboxId: string): void;
}
