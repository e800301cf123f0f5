import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type { ConnectRequest, ConnectResponseSchema } from "@dnah/proto/process/process_pb";
import type { AgentContext } from "../context.js";
import { newEventChannel, startEvent, streamProcess } from "./events.js";
import type { ManagedProcess } from "./managed-process.js";

type ConnectResponseInit = MessageInitShape<typeof ConnectResponseSchema>;

/**
 * Attaches to a running process: `start{pid}`, then its output from now on, then `end`. A
 * process that ended within the last 30 s yields `start` and its retained `end`.
 */
export function connect(ctx: AgentContext) {
  return async function* (req: ConnectRequest, hctx: HandlerContext): AsyncGenerator<ConnectResponseInit> {
    let proc: ManagedProcess;
    try {
      proc = ctx.processes.find(req.process);
    } catch (err) {
      const retained = ctx.processes.findRetained(req.process);
      if (!retained) throw err;
      yield { event: startEvent(retained.pid) };
      yield { event: { event: { case: "end", value: retained.end } } };
      return;
    }
    const channel = newEventChannel(() => proc.maybeResume());
    proc.subscribe(channel);
    yield* streamProcess(ctx, hctx, proc, channel);
  };
}
