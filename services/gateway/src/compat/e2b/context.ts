import type { Db, Logger } from "@dnah/platform";
import type { ApiKeyVerifier } from "../../auth/api-keys.js";
import type { RpcDeps } from "../../rpc/deps.js";
import type { AccessTokens } from "./access-token.js";
import type { SandboxTunnels } from "./tunnels.js";

/** What the E2B routes share; built once by createE2bCompat. */
export interface E2bContext {
  deps: RpcDeps;
  db: Pick<Db, "query">;
  tokens: AccessTokens;
  tunnels: SandboxTunnels;
  verifier: ApiKeyVerifier;
  logger: Logger;
  /** The largest template build context (a COPY step's tar) accepted. */
  templateContextMaxBytes: number;
}
