import type { FastifyReply } from "fastify";
import type { RpcDeps } from "../rpc/deps.js";

export interface RestOptions {
  deps: RpcDeps;
  jsonBodyLimitBytes: number;
  fileLimitBytes: number;
}

/**
 * A signal that aborts when the client goes away before the response is complete. (The
 * response's `close` is used, not the request's: Node emits the request's `close` as soon
 * as its body has been read.)
 */
export function abortOnDisconnect(reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  const res = reply.raw;
  res.once("close", () => {
    if (!res.writableFinished) ac.abort(new Error("client disconnected"));
  });
  return ac.signal;
}
