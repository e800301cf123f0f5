import { create } from "@bufbuild/protobuf";
import { ForkSandboxRequestSchema } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { classify, ERROR_TABLE, type ErrorKind, InvalidArgumentError } from "../../../errors.js";
import { forkSandbox } from "../../../rpc/fork-sandbox.js";
import { FORK_COUNT } from "../../../rpc/validate.js";
import { adoptE2bSandbox } from "../adopt.js";
import { e2bBody, optInt32 } from "../body.js";
import type { E2bContext } from "../context.js";
import { e2bErrorOfKind } from "../errors.js";
import { sandboxJson } from "../views.js";

/** `SandboxForkRequest.timeout` when absent (E2B's default, spec §5.3). */
export const DEFAULT_FORK_TIMEOUT_S = 15;

/**
 * `POST /sandboxes/{id}/fork` `{count?, timeout?}` → 201 `SandboxForkResult[]`: one item per
 * clone, `{sandbox}` or `{error: {code, message}}`. The source keeps running; an unknown
 * source is a 404 for the whole call. Each clone becomes an E2B sandbox of its own (its own
 * end, `timeout` seconds from now, and its own envd access token).
 */
export async function forkRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  app.post<{ Params: { id: string } }>(
    "/sandboxes/:id/fork",
    { config: { e2bApi: true } },
    async (req, reply) => {
      const body = e2bBody(req.body);
      const count = optInt32(body, "count") ?? 1;
      if (count < FORK_COUNT.min || count > FORK_COUNT.max)
        throw new InvalidArgumentError(`'count' must be from ${FORK_COUNT.min} to ${FORK_COUNT.max}`);
      const timeout = optInt32(body, "timeout") ?? DEFAULT_FORK_TIMEOUT_S;
      if (timeout <= 0) throw new InvalidArgumentError("'timeout' must be a positive number of seconds");
      const sourceId = req.params.id;
      const res = await forkSandbox(
        ctx.deps,
        create(ForkSandboxRequestSchema, { sandboxId: sourceId, count, metadata: {} }),
      );
      // A clone restored with its memory keeps its source's agent and token: prove it to change it.
      const proof = ctx.tokens.tokenFor(sourceId);
      const items = await Promise.all(
        res.results.map(async (r) => {
          if (r.sandbox === undefined) return { error: e2bErrorOfKind(classifyKind(r.errorCode), r.error) };
          try {
            const token = await adoptE2bSandbox(ctx, r.sandbox.sandboxId, timeout, "kill", proof);
            return { sandbox: sandboxJson(r.sandbox, token) };
          } catch (err) {
            ctx.logger.error(
              { err, "sandbox.id": r.sandbox.sandboxId, requestId: req.requestId },
              "cannot adopt a fork clone",
            );
            const c = classify(err);
            return { error: e2bErrorOfKind(c.kind, c.message) };
          }
        }),
      );
      return reply.code(201).send(items);
    },
  );
}

/** The native fork reports each failed clone with one of the gateway's error kinds. */
function classifyKind(errorCode: string): ErrorKind {
  return Object.hasOwn(ERROR_TABLE, errorCode) ? (errorCode as ErrorKind) : "internal";
}
