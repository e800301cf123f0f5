import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ListResponseSchema } from "@dnah/proto/process/process_pb";
import type { AgentContext } from "../context.js";

/** Running processes with the config they were started with (`config` always present). */
export function list(ctx: AgentContext) {
  return (): MessageInitShape<typeof ListResponseSchema> => ({
    processes: ctx.processes
      .list()
      .map((p) =>
        p.tag === undefined ? { pid: p.pid, config: p.config } : { pid: p.pid, config: p.config, tag: p.tag },
      ),
  });
}
