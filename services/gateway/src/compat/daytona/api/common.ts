import type { Sandbox } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyRequest } from "fastify";
import { SandboxNotFoundError } from "../../../errors.js";
import { type DaytonaContext, requestOrigin, toolboxProxyUrl } from "../context.js";
import { type DaytonaRow, findDaytonaSandbox } from "../db.js";
import { sandboxDto } from "../dto.js";

/** Path parameters are at most this long; longer ones cannot name a sandbox. */
const MAX_ID_OR_NAME = 255;

/** The caller's sandbox by id or name; another key's sandbox is as unknown as a missing one. */
export async function ownedSandbox(
  ctx: DaytonaContext,
  req: FastifyRequest,
  idOrName: string,
): Promise<DaytonaRow> {
  if (idOrName === "" || idOrName.length > MAX_ID_OR_NAME) throw new SandboxNotFoundError(idOrName);
  const row = await findDaytonaSandbox(ctx.db, req.daytonaOwner, idOrName);
  if (row === undefined) throw new SandboxNotFoundError(idOrName);
  return row;
}

/** The full DTO; `native` gives the intervals (see sandboxDto). */
export function fullDto(
  req: FastifyRequest,
  row: DaytonaRow,
  native: Sandbox | undefined,
): Record<string, unknown> {
  return sandboxDto(row, native, toolboxProxyUrl(requestOrigin(req)), true);
}

export type IdParams = { Params: { idOrName: string } };
