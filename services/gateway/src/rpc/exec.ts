import { create } from "@bufbuild/protobuf";
import {
  type ExecRequest,
  type ExecResponse,
  ExecResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { runCommand } from "../sandbox/process.js";
import { commandSpec } from "./command.js";
import type { CallOptions, RpcDeps } from "./deps.js";

export interface ExecResult {
  response: ExecResponse;
  /** Output went over the limit: stdout and stderr hold only its beginning. */
  truncated: boolean;
}

/**
 * Exec: runs `/bin/bash -l -c <command>` to completion and collects its output. stdout and
 * stderr together keep at most `execOutputLimitBytes`; the rest is read and dropped so the
 * exit code still arrives. A non-zero exit is a result, not an error. A timeout (request
 * value, 0 = the configured default) kills the process and sets `error`.
 */
export async function exec(deps: RpcDeps, req: ExecRequest, opts: CallOptions = {}): Promise<ExecResult> {
  const spec = commandSpec(req, deps.limits, deps.limits.execTimeoutMs);
  const out = { stdout: [] as Uint8Array[], stderr: [] as Uint8Array[] };
  let room = deps.limits.execOutputLimitBytes;
  let truncated = false;
  let exitCode = 0;
  let error: string | undefined;
  for await (const ev of runCommand(deps.agents, deps.logger, spec, opts.signal)) {
    if (ev.type === "stdout" || ev.type === "stderr") {
      if (ev.data.byteLength > room) {
        truncated = true;
        if (room > 0) out[ev.type].push(ev.data.subarray(0, room));
        room = 0;
      } else {
        out[ev.type].push(ev.data);
        room -= ev.data.byteLength;
      }
    } else if (ev.type === "exit") {
      exitCode = ev.exitCode;
      error = ev.error;
    }
  }
  return {
    response: create(ExecResponseSchema, {
      exitCode,
      stdout: Buffer.concat(out.stdout),
      stderr: Buffer.concat(out.stderr),
      ...(error !== undefined ? { error } : {}),
    }),
    truncated,
  };
}
