import type { AgentContext } from "../context.js";
import { globalEnv } from "../state.js";
import { type HttpResponse, sendJson } from "./respond.js";

/** `GET /envs` → the sandbox-wide variables (the code interpreter exports them). */
export function envs(ctx: AgentContext, res: HttpResponse): void {
  res.setHeader("Cache-Control", "no-store");
  sendJson(res, 200, globalEnv(ctx.state));
}
