import { request } from "node:http";
import { ENVD_PORT } from "./proxy.js";
import type { SandboxTunnels } from "./tunnels.js";

const INIT_TIMEOUT_MS = 10_000;

/**
 * Sets the envd access token in a fresh sandbox: `POST /init {"accessToken"}` through the
 * tunnel. The agent takes the first token without proof and enforces it from then on.
 * `proofToken`: the token the agent may already hold — a clone restored with its memory keeps
 * its source's agent, token included, and changes it only when shown that one (sent as
 * `X-Access-Token`, which an agent without a token ignores).
 */
export async function setAccessToken(
  tunnels: SandboxTunnels,
  sandboxId: string,
  token: string,
  proofToken?: string,
): Promise<void> {
  const agent = await tunnels.agent(sandboxId, ENVD_PORT);
  if (agent === undefined) throw new Error(`sandbox ${sandboxId} is not running right after create`);
  const body = JSON.stringify({ accessToken: token });
  const status = await new Promise<number>((resolve, reject) => {
    const req = request({
      agent,
      method: "POST",
      path: "/init",
      headers: {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
        ...(proofToken !== undefined ? { "x-access-token": proofToken } : {}),
      },
      timeout: INIT_TIMEOUT_MS,
    });
    req.on("response", (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("sandbox agent did not answer POST /init in time")));
    req.on("error", reject);
    req.end(body);
  });
  if (status !== 204 && status !== 200)
    throw new Error(`sandbox agent answered POST /init with HTTP ${status}`);
}
