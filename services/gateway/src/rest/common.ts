import type { FastifyReply } from "fastify";
import type { RpcDeps } from "../rpc/deps.js";

export interface RestOptions {
  deps: RpcDeps;
  jsonBodyLimitBytes: number;
  fileLimitBytes: number;
}

declare module "fastify" {
  interface FastifyInstance {
    /** The gateway's: aborted, with the answer to give, when its shutdown reaches its bound. */
    shutdownSignal?: AbortSignal;
  }
}

/**
 * A signal that aborts when the client goes away before the response is complete, or when
 * the gateway's shutdown ends the calls still running (its reason is then their answer).
 * (The response's `close` is used, not the request's: Node emits the request's `close` as
 * soon as its body has been read.)
 */
export function abortOnDisconnect(reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  const res = reply.raw;
  const shutdown = reply.server.shutdownSignal;
  const onShutdown = () => ac.abort(shutdown?.reason);
  if (shutdown?.aborted) onShutdown();
  else shutdown?.addEventListener("abort", onShutdown, { once: true });
  res.once("close", () => {
    shutdown?.removeEventListener("abort", onShutdown);
    if (!res.writableFinished) ac.abort(new Error("client disconnected"));
  });
  return ac.signal;
}
