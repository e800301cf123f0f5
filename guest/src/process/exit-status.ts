import { constants } from "node:os";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ProcessEvent_EndEventSchema } from "@dnah/proto/process/process_pb";

export type EndEventInit = MessageInitShape<typeof ProcessEvent_EndEventSchema>;

/** Go's `syscall.Signal.String()` on Linux, which envd's `ProcessState.String()` prints. */
const GO_SIGNAL_NAMES: Record<number, string> = {
  1: "hangup",
  2: "interrupt",
  3: "quit",
  4: "illegal instruction",
  5: "trace/breakpoint trap",
  6: "aborted",
  7: "bus error",
  8: "floating point exception",
  9: "killed",
  10: "user defined signal 1",
  11: "segmentation fault",
  12: "user defined signal 2",
  13: "broken pipe",
  14: "alarm clock",
  15: "terminated",
  16: "stack fault",
  17: "child exited",
  18: "continued",
  19: "stopped (signal)",
  20: "stopped",
  21: "stopped (tty input)",
  22: "stopped (tty output)",
  23: "urgent I/O condition",
  24: "CPU time limit exceeded",
  25: "file size limit exceeded",
  26: "virtual timer expired",
  27: "profiling timer expired",
  28: "window changed",
  29: "I/O possible",
  30: "power failure",
  31: "bad system call",
};

/**
 * The `end` event envd sends for a finished process: `exitCode` −1 and `exited` false when a
 * signal ended it, `status` as Go's `ProcessState.String()`, `error` set when not a clean exit.
 */
export function endEvent(code: number | null, signal: NodeJS.Signals | null): EndEventInit {
  if (signal !== null) {
    const num = constants.signals[signal];
    const status = `signal: ${GO_SIGNAL_NAMES[num] ?? `signal ${num}`}`;
    return { exitCode: -1, exited: false, status, error: status };
  }
  const exitCode = code ?? -1;
  const status = `exit status ${exitCode}`;
  return exitCode === 0
    ? { exitCode, exited: true, status }
    : { exitCode, exited: true, status, error: status };
}
