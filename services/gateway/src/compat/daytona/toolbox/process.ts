import type { FastifyPluginAsync } from "fastify";
import { InvalidArgumentError } from "../../../errors.js";
import { abortOnDisconnect } from "../../../rest/common.js";
import { MAX_COMMAND_BYTES } from "../../../rpc/validate.js";
import { type DaytonaHttpError, daemonError } from "../errors.js";
import { codeCommand, codeLanguage } from "./code-run.js";
import type { ToolboxContext } from "./context.js";
import { runShell } from "./shell.js";
import { body, envMap, optInt, optStr, sandboxPath, str, strArray } from "./validate.js";

/** Without a `timeout`, a command may run this long (Daytona has no limit; we keep a bound). */
export const EXEC_MAX_TIMEOUT_MS = 60 * 60_000;
const MAX_TIMEOUT_S = EXEC_MAX_TIMEOUT_MS / 1000;
/** codeRun sends the program on stdin; beyond this it is refused. */
const MAX_CODE_BYTES = 4 * 1024 * 1024;

function timeoutMs(seconds: number | undefined): number {
  return seconds === undefined || seconds === 0 ? EXEC_MAX_TIMEOUT_MS : seconds * 1000;
}

function timeoutError(): DaytonaHttpError {
  return daemonError("REQUEST_TIMEOUT", "command execution timeout");
}

/** `POST /process/execute` and `POST /process/code-run`: one-shot commands, output combined. */
export const processRoutes: FastifyPluginAsync<ToolboxContext> = async (app, ctx) => {
  app.post<{ Params: { sandboxId: string } }>("/:sandboxId/process/execute", async (req, reply) => {
    const b = body(req.body);
    const command = str(b, "command");
    if (Buffer.byteLength(command) > MAX_COMMAND_BYTES)
      throw new InvalidArgumentError(`command is longer than ${MAX_COMMAND_BYTES} bytes`);
    const cwd = optStr(b, "cwd");
    const envs = envMap(b, "envs");
    const timeout = optInt(b, "timeout", 0, MAX_TIMEOUT_S);
    const id = req.params.sandboxId;
    const r = await runShell(ctx, id, command, {
      cwd: cwd === undefined ? undefined : sandboxPath(cwd, "cwd"),
      envs,
      timeoutMs: timeoutMs(timeout),
      combine: true,
      signal: abortOnDisconnect(reply),
    });
    ctx.touch(id);
    if (r.timedOut) throw timeoutError();
    return { exitCode: r.exitCode, result: r.stdout.toString("utf8") };
  });

  app.post<{ Params: { sandboxId: string } }>("/:sandboxId/process/code-run", async (req, reply) => {
    const b = body(req.body);
    const code = typeof b.code === "string" ? b.code : undefined;
    if (code === undefined) throw new InvalidArgumentError("code is required (a string)");
    if (Buffer.byteLength(code) > MAX_CODE_BYTES)
      throw new InvalidArgumentError(`code is longer than ${MAX_CODE_BYTES} bytes`);
    const lang = codeLanguage(optStr(b, "language"));
    const argv = strArray(b, "argv", { required: false, max: 1024 });
    const envs = envMap(b, "envs");
    const timeout = optInt(b, "timeout", 0, MAX_TIMEOUT_S);
    const id = req.params.sandboxId;
    const r = await runShell(ctx, id, codeCommand(lang, argv), {
      envs,
      timeoutMs: timeoutMs(timeout),
      // The program goes on stdin (an empty one: stdin is /dev/null, an empty program).
      stdin: Buffer.from(code),
      combine: true,
      signal: abortOnDisconnect(reply),
    });
    ctx.touch(id);
    if (r.timedOut) throw timeoutError();
    return { exitCode: r.exitCode, result: r.stdout.toString("utf8"), artifacts: { charts: [] } };
  });
};
