import { stat } from "node:fs/promises";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import {
  ProcessConfigSchema,
  type StartRequest,
  type StartResponseSchema,
} from "@dnah/proto/process/process_pb";
import { type AgentContext, requestUser } from "../context.js";
import { fsError, invalidArgument } from "../errors.js";
import { resolvePath } from "../paths.js";
import { globalEnv } from "../state.js";
import { newEventChannel, streamProcess } from "./events.js";
import type { ManagedProcess } from "./managed-process.js";
import { processEnv } from "./spawn.js";

type StartResponseInit = MessageInitShape<typeof StartResponseSchema>;

/**
 * Starts a process and streams `start{pid}`, its output and `end`. `Connect-Timeout-Ms` is the
 * process's lifetime; a client that disconnects leaves the process running.
 */
export function start(ctx: AgentContext) {
  return async function* (req: StartRequest, hctx: HandlerContext): AsyncGenerator<StartResponseInit> {
    const user = await requestUser(ctx, hctx.requestHeader);
    const config = req.process;
    const cwd = resolvePath(config?.cwd ?? "", user, ctx.state.defaultWorkdir);
    try {
      await stat(cwd);
    } catch (err) {
      if ((err as { code?: string }).code === "ENOENT") throw invalidArgument(`cwd '${cwd}' does not exist`);
      throw fsError(err, `error checking cwd '${cwd}'`);
    }
    let proc: ManagedProcess | undefined;
    const channel = newEventChannel(() => proc?.maybeResume());
    proc = await ctx.processes.start({
      launch: {
        user,
        cmd: config?.cmd ?? "",
        args: config?.args ?? [],
        env: processEnv(ctx.config.pathEnv, user, globalEnv(ctx.state), config?.envs ?? {}),
        cwd,
        stdin: req.stdin ?? true,
        pty: req.pty ? { cols: req.pty.size?.cols ?? 0, rows: req.pty.size?.rows ?? 0 } : undefined,
      },
      config: config ?? create(ProcessConfigSchema),
      tag: req.tag,
      timeoutMs: hctx.timeoutMs() ?? 0,
      subscriber: channel,
    });
    yield* streamProcess(ctx, hctx, proc, channel);
  };
}
