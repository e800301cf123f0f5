import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type { WatchDirRequest, WatchDirResponseSchema } from "@dnah/proto/filesystem/filesystem_pb";
import { type AgentContext, requestUser } from "../context.js";
import type { GuestError } from "../errors.js";
import { resolvePath } from "../paths.js";
import { Channel, keepaliveMs } from "../stream.js";
import { checkWatchable, startWatch } from "./watch.js";

type WatchDirResponseInit = MessageInitShape<typeof WatchDirResponseSchema>;

/** Events a slow WatchDir client may have queued before new ones are dropped. */
const MAX_QUEUED_EVENTS = 100_000;

/** Streams `start`, then filesystem events under a directory, with keepalives when idle. */
export function watchDir(ctx: AgentContext) {
  return async function* (req: WatchDirRequest, hctx: HandlerContext): AsyncGenerator<WatchDirResponseInit> {
    const user = await requestUser(ctx, hctx.requestHeader);
    const path = resolvePath(req.path, user, ctx.state.defaultWorkdir);
    await checkWatchable(path, req.allowNetworkMounts);
    const channel = new Channel<WatchDirResponseInit>(() => 1);
    let failure: GuestError | undefined;
    let dropped = 0;
    const watcher = startWatch({
      path,
      recursive: req.recursive,
      includeEntry: req.includeEntry,
      users: ctx.users,
      metadata: ctx.metadata,
      log: ctx.log,
      onEvent: (ev) => {
        if (channel.size >= MAX_QUEUED_EVENTS) {
          if (dropped++ === 0) ctx.log.warn("watch client too slow, dropping events", { path });
          return;
        }
        channel.push({ event: { case: "filesystem", value: ev } });
      },
      onError: (err) => {
        failure = err;
        channel.close();
      },
    });
    try {
      await watcher.ready;
      yield { event: { case: "start", value: {} } };
      const idleMs = keepaliveMs(hctx.requestHeader, ctx.config.keepaliveFallbackMs);
      const keepalive = (): WatchDirResponseInit => ({ event: { case: "keepalive", value: {} } });
      yield* channel.drain(hctx.signal, idleMs, keepalive);
      if (failure) throw failure;
    } finally {
      watcher.close();
    }
  };
}
