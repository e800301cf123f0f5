import { ACCESS_TOKEN_HEADER, tokenMatches } from "../auth.js";
import type { AgentContext } from "../context.js";
import { ENVD_VERSION } from "../version.js";
import { HttpError, type HttpRequest, type HttpResponse, readBody, sendNoContent } from "./respond.js";

interface InitBody {
  envVars?: Record<string, string>;
  accessToken?: string;
  defaultUser?: string;
  defaultWorkdir?: string;
  sandboxId?: string;
  templateId?: string;
}

/**
 * `POST /init`: sets the sandbox-wide env vars (merged into earlier ones), the access token, the
 * default user and workdir, and the sandbox/template ids. Once a token is set, changing anything
 * requires proving it: the body's `accessToken` equals it, or `X-Access-Token` does (envd checks
 * a hash in Firecracker's MMDS instead, which dnah does not have).
 */
export async function init(ctx: AgentContext, req: HttpRequest, res: HttpResponse): Promise<void> {
  res.setHeader("X-Envd-Version", ENVD_VERSION);
  const raw = await readBody(req, ctx.config.initBodyMaxBytes);
  const body = parseInitBody(raw);
  const { state } = ctx;
  if (state.accessToken !== undefined) {
    const header = req.headers[ACCESS_TOKEN_HEADER];
    const proven =
      tokenMatches(state.accessToken, body.accessToken) ||
      tokenMatches(state.accessToken, typeof header === "string" ? header : undefined);
    if (!proven) throw new HttpError(401, "access token validation failed");
  }
  for (const [k, v] of Object.entries(body.envVars ?? {})) state.envVars.set(k, v);
  if (body.accessToken) state.accessToken = body.accessToken;
  if (body.defaultUser) state.defaultUser = body.defaultUser;
  if (body.defaultWorkdir) state.defaultWorkdir = body.defaultWorkdir;
  if (body.sandboxId) state.sandboxId = body.sandboxId;
  if (body.templateId) state.templateId = body.templateId;
  ctx.log.info("initialized", {
    "sandbox.id": state.sandboxId,
    defaultUser: state.defaultUser,
    envVars: state.envVars.size,
    accessToken: state.accessToken !== undefined,
  });
  sendNoContent(res, { "Cache-Control": "no-store", "X-Envd-Version": ENVD_VERSION });
}

/** Validates the JSON shape; unknown fields (envd's timestamp, volumeMounts…) are ignored. */
export function parseInitBody(raw: Buffer): InitBody {
  if (raw.length === 0) return {};
  let json: unknown;
  try {
    json = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new HttpError(400, "request body is not valid JSON");
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new HttpError(400, "request body must be a JSON object");
  }
  const o = json as Record<string, unknown>;
  const out: InitBody = {};
  for (const key of ["accessToken", "defaultUser", "defaultWorkdir", "sandboxId", "templateId"] as const) {
    const v = o[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== "string") throw new HttpError(400, `${key} must be a string`);
    out[key] = v;
  }
  if (o.envVars !== undefined && o.envVars !== null) {
    if (typeof o.envVars !== "object" || Array.isArray(o.envVars)) {
      throw new HttpError(400, "envVars must be an object of strings");
    }
    const envVars: Record<string, string> = {};
    for (const [k, v] of Object.entries(o.envVars as Record<string, unknown>)) {
      if (typeof v !== "string") throw new HttpError(400, `envVars.${k} must be a string`);
      if (k === "" || k.includes("=") || k.includes("\0") || v.includes("\0")) {
        throw new HttpError(400, `invalid environment variable '${k}'`);
      }
      envVars[k] = v;
    }
    out.envVars = envVars;
  }
  return out;
}
