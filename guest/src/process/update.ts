import type { UpdateRequest } from "@dnah/proto/process/process_pb";
import type { AgentContext } from "../context.js";

/** Resizes a PTY when `pty` is given; otherwise a no-op. */
export function update(ctx: AgentContext) {
  return (req: UpdateRequest): Record<string, never> => {
    const proc = ctx.processes.find(req.process);
    if (req.pty) proc.resize(req.pty.size?.cols ?? 0, req.pty.size?.rows ?? 0);
    return {};
  };
}
