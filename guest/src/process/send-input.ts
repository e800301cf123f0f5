import type { SendInputRequest } from "@dnah/proto/process/process_pb";
import type { AgentContext } from "../context.js";
import { writeInput } from "./input.js";

/** Writes bytes to a process's stdin or PTY; resolves once they reach the pipe. */
export function sendInput(ctx: AgentContext) {
  return async (req: SendInputRequest): Promise<Record<string, never>> => {
    await writeInput(ctx.processes.find(req.process), req.input);
    return {};
  };
}
