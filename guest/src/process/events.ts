import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type { ProcessEventSchema } from "@dnah/proto/process/process_pb";
import type { AgentContext } from "../context.js";
import { Channel, keepaliveMs } from "../stream.js";
import type { ManagedProcess } from "./managed-process.js";

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

/**
 * A subscribed process's stream, as Start and Connect send it: the start event, then its
 * events with keepalives when idle, until the end event or the caller goes away. The channel
 * is unsubscribed however the stream ends.
 */
export async function* streamProcess(
  ctx: AgentContext,
  hctx: HandlerContext,
  proc: ManagedProcess,
  channel: Channel<ProcessEventInit>,
): AsyncGenerator<{ event: ProcessEventInit }> {
  try {
    yield { event: startEvent(proc.pid) };
    const idleMs = keepaliveMs(hctx.requestHeader, ctx.config.keepaliveFallbackMs);
    for await (const event of channel.drain(hctx.signal, idleMs, keepaliveEvent)) yield { event };
  } finally {
    proc.unsubscribe(channel);
  }
}
