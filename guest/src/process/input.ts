import type { ProcessInput } from "@dnah/proto/process/process_pb";
import { unimplemented } from "../errors.js";
import type { ManagedProcess } from "./managed-process.js";

/** Routes one input message: `stdin` to a pipe process, `pty` to a PTY process. */
export async function writeInput(proc: ManagedProcess, input: ProcessInput | undefined): Promise<void> {
  const sel = input?.input;
  switch (sel?.case) {
    case "stdin":
      return proc.writeStdin(sel.value);
    case "pty":
      return proc.writePty(sel.value);
    default:
      throw unimplemented("invalid input type");
  }
}
