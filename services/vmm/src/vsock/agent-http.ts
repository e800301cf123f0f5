import { Agent, request } from "node:http";
import type { Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { GuestUnavailableError } from "../domain/errors.js";
import { dialVsock } from "./dialer.js";

/** The guest agent's fixed vsock ports (the guest's `ports.ts` documents the same numbers). */
export const AGENT_PORT = 49983;

export function vsockAgent(vsockPath: string, port: number): Agent {
  const agent = new Agent({ keepAlive: false });
  (agent as unknown as { createConnection: unknown }).createConnection = (
    _o: unknown,
    cb: (err: Error | null, s?: Socket) => void,
  ) => {
    dialVsock(vsockPath, port).then(
      (s) => {
        cb(null, s);
        s.resume();
      },
      (e: Error) => cb(e),
    );
    return undefined;
  };
  return agent;
}

export interface AgentResponse {
  status: number;
  body: string;
}

/** One HTTP request to the guest agent over its vsock. */
export function agentRequest(
  vsockPath: string,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 5_000,
  contentType = "application/json",
): Promise<AgentResponse> {
  const payload =
    body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        agent: vsockAgent(vsockPath, AGENT_PORT),
        host: "agent",
        method,
        path,
        timeout: timeoutMs,
        headers: payload
          ? { "content-type": contentType, "content-length": payload.length, "connect-protocol-version": "1" }
          : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
        );
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`agent ${method} ${path} timed out`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/**
 * Waits until the agent answers `GET /health` with 204, polling briefly: a jail's agent
 * needs tens of milliseconds, a microVM's a second or more.
 */
export async function waitForAgent(
  vsockPath: string,
  timeoutMs: number,
  isAlive: () => boolean,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer";
  let delay = 1;
  while (Date.now() < deadline) {
    if (!isAlive()) throw new GuestUnavailableError(`sandbox stopped while booting (${last})`);
    try {
      const res = await agentRequest(
        vsockPath,
        "GET",
        "/health",
        undefined,
        Math.min(2_000, Math.max(100, deadline - Date.now())),
      );
      if (res.status === 204) return;
      last = `health answered ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(delay);
    // A failed dial of a socket that does not exist yet costs microseconds: poll tightly so
    // a fast boot is not rounded up to the next long sleep.
    delay = Math.min(delay + 1, 5);
  }
  throw new GuestUnavailableError(`agent did not answer within ${timeoutMs} ms (${last})`);
}

/**
 * Runs one command and one stat through the agent, so a warm-pool sandbox's first real exec
 * does not pay for cold code paths (JIT, lazily loaded modules, the shell's first start).
 * Best effort: a failure is returned, not thrown.
 */
export async function warmUp(vsockPath: string): Promise<string | undefined> {
  const start = Buffer.from(
    JSON.stringify({ process: { cmd: "/bin/bash", args: ["-l", "-c", "true"] }, stdin: false }),
  );
  const envelope = Buffer.alloc(5 + start.length);
  envelope.writeUInt32BE(start.length, 1);
  start.copy(envelope, 5);
  try {
    const r = await agentRequest(
      vsockPath,
      "POST",
      "/process.Process/Start",
      envelope,
      5_000,
      "application/connect+json",
    );
    if (r.status !== 200) return `Start answered ${r.status}`;
    const s = await agentRequest(vsockPath, "POST", "/filesystem.Filesystem/Stat", { path: "/" });
    if (s.status !== 200) return `Stat answered ${s.status}`;
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}
