import type { ServiceImpl } from "@connectrpc/connect";
import type { Process } from "@dnah/proto/process/process_pb";
import type { AgentContext } from "../context.js";
import { closeStdin } from "./close-stdin.js";
import { connect } from "./connect.js";
import { list } from "./list.js";
import { sendInput } from "./send-input.js";
import { sendSignal } from "./send-signal.js";
import { start } from "./start.js";
import { streamInput } from "./stream-input.js";
import { update } from "./update.js";

/** `process.Process`, wire-compatible with envd 0.6.13. */
export function processService(ctx: AgentContext): ServiceImpl<typeof Process> {
  return {
    list: list(ctx),
    connect: connect(ctx),
    start: start(ctx),
    update: update(ctx),
    streamInput: streamInput(ctx),
    sendInput: sendInput(ctx),
    sendSignal: sendSignal(ctx),
    closeStdin: closeStdin(ctx),
  };
}
