import type { StreamInputRequest } from "@dnah/proto/process/process_pb";
import type { AgentContext } from "../context.js";
import { invalidArgument, unimplemented } from "../errors.js";
import { writeInput } from "./input.js";
import type { ManagedProcess } from "./managed-process.js";

/** Client-streamed input: a `start` selecting the process, then `data` messages. */
export function streamInput(ctx: AgentContext) {
  return async (requests: AsyncIterable<StreamInputRequest>): Promise<Record<string, never>> => {
    let proc: ManagedProcess | undefined;
    for await (const req of requests) {
      const ev = req.event;
      switch (ev.case) {
        case "start":
          proc = ctx.processes.find(ev.value.process);
          break;
        case "data":
          if (!proc) throw invalidArgument("input sent before the start event");
          await writeInput(proc, ev.value.input);
          break;
        case "keepalive":
          break;
        default:
          throw unimplemented("invalid event type");
      }
    }
    return {};
  };
}
