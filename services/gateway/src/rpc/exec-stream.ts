import { create } from "@bufbuild/protobuf";
import {
  type ExecStreamRequest,
  type ExecStreamResponse,
  ExecStreamResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { runCommand } from "../sandbox/process.js";
import { commandSpec } from "./command.js";
import type { CallOptions, RpcDeps } from "./deps.js";

/**
 * ExecStream: runs a command and yields `pid`, then `stdout`/`stderr` chunks as they come,
 * then one `exit`. timeout_ms 0 means no limit. When the caller goes away (its signal
 * aborts) or stops reading, the process is killed.
 */
export async function* execStream(
  deps: RpcDeps,
  req: ExecStreamRequest,
  opts: CallOptions = {},
): AsyncGenerator<ExecStreamResponse, void, undefined> {
  const spec = commandSpec(req, deps.limits, 0);
  for await (const ev of runCommand(deps.agents, deps.logger, spec, opts.signal)) {
    switch (ev.type) {
      case "start":
        yield create(ExecStreamResponseSchema, { event: { case: "pid", value: ev.pid } });
        break;
      case "stdout":
      case "stderr":
        yield create(ExecStreamResponseSchema, { event: { case: ev.type, value: ev.data } });
        break;
      case "exit":
        yield create(ExecStreamResponseSchema, {
          event: {
            case: "exit",
            value: { exitCode: ev.exitCode, ...(ev.error !== undefined ? { error: ev.error } : {}) },
          },
        });
        break;
    }
  }
}
