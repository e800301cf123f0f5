import type { Logger } from "@dnah/platform";
import type { RpcDeps } from "../../../rpc/deps.js";

/**
 * What the toolbox routes need from the Daytona surface that mounts them. `resolve` throws a
 * `not_found` GatewayError unless the id names a live Daytona sandbox (`failed_precondition`
 * when it is stopped); `touch` records activity for auto-stop.
 */
export interface ToolboxContext {
  deps: RpcDeps;
  logger: Logger;
  resolve(sandboxId: string): Promise<void>;
  touch(sandboxId: string): void;
}
