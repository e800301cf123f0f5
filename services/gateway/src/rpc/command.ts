import type { ExecRequest, ExecStreamRequest } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { PayloadTooLargeError } from "../errors.js";
import { resolveSandboxPath } from "../sandbox/paths.js";
import type { CommandSpec } from "../sandbox/process.js";
import type { Limits } from "./deps.js";
import { checkCommand, checkEnvVars, checkSandboxId, checkUser } from "./validate.js";

/** Validates an Exec/ExecStream request into what runCommand takes. */
export function commandSpec(
  req: ExecRequest | ExecStreamRequest,
  limits: Limits,
  defaultTimeoutMs: number,
): CommandSpec {
  checkSandboxId(req.sandboxId);
  checkCommand(req.command);
  checkEnvVars("envs", req.envs);
  if (req.user !== "") checkUser(req.user);
  if (req.stdin.byteLength > limits.fileLimitBytes) {
    throw new PayloadTooLargeError(`stdin is larger than ${limits.fileLimitBytes} bytes`);
  }
  return {
    sandboxId: req.sandboxId,
    command: req.command,
    envs: req.envs,
    cwd: req.cwd === "" ? undefined : resolveSandboxPath(req.cwd),
    stdin: req.stdin,
    timeoutMs: req.timeoutMs === 0 ? defaultTimeoutMs : req.timeoutMs,
    user: req.user === "" ? undefined : req.user,
  };
}
