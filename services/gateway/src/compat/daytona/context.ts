import type { Db, Logger } from "@dnah/platform";
import type { FastifyRequest } from "fastify";
import type { ApiKeyVerifier } from "../../auth/api-keys.js";
import type { RpcDeps } from "../../rpc/deps.js";
import type { DaytonaEvents } from "./socket.js";

declare module "fastify" {
  interface FastifyRequest {
    /** SHA-256 of the API key of a Daytona request, set by the Daytona auth hook. */
    daytonaOwner: string;
    /** The state of the toolbox request's sandbox as the auth hook read it ("" when none). */
    daytonaSandboxState: string;
    /** The id of the API key of a Daytona API request (who owns the templates it builds). */
    daytonaKeyId: string;
  }
}

/** What the Daytona routes and the preview proxy share; built once by createDaytonaCompat. */
export interface DaytonaContext {
  deps: RpcDeps;
  db: Pick<Db, "query">;
  verifier: ApiKeyVerifier;
  logger: Logger;
  events: DaytonaEvents;
  /** Records activity for auto-stop: the native idle clock (RpcDeps.activity). */
  touch(sandboxId: string): void;
  /** The gateway's own origin (`http://host:port`) once it listens: for DTOs not answering a request. */
  origin(): string | undefined;
}

/** The origin the caller reached us at: the base of `toolboxProxyUrl` and of preview links. */
export function requestOrigin(req: FastifyRequest): string {
  return `${req.protocol}://${req.host}`;
}

export function toolboxProxyUrl(origin: string): string {
  return `${origin}/toolbox`;
}
