import { type SendSignalRequest, Signal } from "@dnah/proto/process/process_pb";
import type { AgentContext } from "../context.js";
import { unimplemented } from "../errors.js";

/** SIGKILL or SIGTERM; any other signal is `unimplemented`, as in envd. */
export function sendSignal(ctx: AgentContext) {
  return (req: SendSignalRequest): Record<string, never> => {
    const proc = ctx.processes.find(req.process);
    switch (req.signal) {
      case Signal.SIGKILL:
        proc.kill("SIGKILL");
        break;
      case Signal.SIGTERM:
        proc.kill("SIGTERM");
        break;
      default:
        throw unimplemented(`invalid signal: ${Signal[req.signal] ?? req.signal}`);
    }
    return {};
  };
}
