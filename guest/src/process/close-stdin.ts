import type { CloseStdinRequest } from "@dnah/proto/process/process_pb";
import type { AgentContext } from "../context.js";

/** Closes a pipe process's stdin (EOF); idempotent. PTY processes must send 0x04 instead. */
export function closeStdin(ctx: AgentContext) {
  return (req: CloseStdinRequest): Record<string, never> => {
    ctx.processes.find(req.process).closeStdin();
    return {};
  };
}
