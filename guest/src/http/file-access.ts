import { ACCESS_TOKEN_HEADER, checkFileAccess } from "../auth.js";
import { type AgentContext, userByName } from "../context.js";
import type { User } from "../users.js";
import { HttpError, type HttpRequest } from "./respond.js";

/**
 * Who may read or write `/files`: the access token, or a valid signature when the token is
 * absent (envd's rule), then the user named by `username` (default user when absent).
 * Failures are 401 with envd's messages.
 */
export async function authorizeFileRequest(
  ctx: AgentContext,
  req: HttpRequest,
  url: URL,
  operation: "read" | "write",
): Promise<{ user: User; path: string | null }> {
  const path = url.searchParams.get("path");
  const username = url.searchParams.get("username");
  const header = req.headers[ACCESS_TOKEN_HEADER];
  const denied = checkFileAccess({
    token: ctx.state.accessToken,
    headerToken: typeof header === "string" ? header : undefined,
    signature: url.searchParams.get("signature"),
    signatureExpiration: url.searchParams.get("signature_expiration"),
    path: path ?? "",
    username,
    operation,
    nowMs: Date.now(),
  });
  if (denied) throw new HttpError(401, denied);
  const user = await userByName(ctx, username).catch((err: unknown) => {
    throw new HttpError(401, err instanceof Error ? err.message : String(err));
  });
  return { user, path };
}
