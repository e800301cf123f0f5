import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ProcessEventSchema } from "@dnah/proto/process/process_pb";
import { Channel } from "../stream.js";

export type ProcessEventInit = MessageInitShape<typeof ProcessEventSchema>;

export const keepaliveEvent = (): ProcessEventInit => ({ event: { case: "keepalive", value: {} } });

export const startEvent = (pid: number): ProcessEventInit => ({ event: { case: "start", value: { pid } } });

/** Bytes an event holds, for backpressure accounting. */
export function eventBytes(ev: ProcessEventInit): number {
  if (ev.event?.case !== "data") return 0;
  const out = ev.event.value.output;
  return out?.value instanceof Uint8Array ? out.value.length : 0;
}

export function newEventChannel(onTake?: () => void): Channel<ProcessEventInit> {
  return new Channel<ProcessEventInit>(eventBytes, onTake);
}
