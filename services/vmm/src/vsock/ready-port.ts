import type { Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { GuestUnavailableError } from "../domain/errors.js";
import { agentRequest } from "./agent-http.js";
import { dialVsock } from "./dialer.js";

/** Where the agent writes the start command's output (the guest's `start-command.ts`). */
export const START_LOG_PATH = "/var/log/dnah/start-command.log";

/**
 * A silent server (one that waits for the client to speak and ignores an HTTP request) is
 * taken as accepting once its connection has stayed open this long: the agent closes a
 * forwarded connection within milliseconds when the port refuses.
 */
const SILENT_ACCEPT_MS = 2_000;
/** A request every server we start answers: HTTP servers reply at once, whatever the path. */
const PROBE = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/**
 * Waits until guest `port` accepts connections: dials it through the vsock (`CONNECT <port>`;
 * the agent forwards to `127.0.0.1:<port>` in the sandbox and closes the connection without a
 * byte when nothing listens there) until the connection answers, polling with a short backoff.
 */
export async function waitForGuestPort(
  vsockPath: string,
  port: number,
  timeoutMs: number,
  isAlive: () => boolean,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer";
  let delay = 20;
  while (Date.now() < deadline) {
    if (!isAlive()) throw new GuestUnavailableError(`sandbox stopped while port ${port} came up (${last})`);
    const left = deadline - Date.now();
    try {
      const sock = await dialVsock(vsockPath, port, Math.min(2_000, Math.max(100, left)));
      const outcome = await probe(sock, Math.min(SILENT_ACCEPT_MS, Math.max(100, left)));
      if (outcome === "accepted") return;
      last = "connection refused";
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 250);
  }
  throw new GuestUnavailableError(
    `guest port ${port} did not accept connections within ${timeoutMs} ms (${last})`,
  );
}

/** "accepted" on the first byte back or when the connection stays open; "refused" on a bare close. */
function probe(sock: Socket, silentMs: number): Promise<"accepted" | "refused"> {
  return new Promise((resolve) => {
    const done = (outcome: "accepted" | "refused") => {
      clearTimeout(timer);
      sock.removeAllListeners("data");
      sock.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => done("accepted"), silentMs);
    sock.once("data", () => done("accepted"));
    sock.once("close", () => done("refused"));
    sock.on("error", () => {
      // the close that follows decides
    });
    sock.resume();
    sock.write(PROBE);
  });
}

/**
 * The end of the start command's log, read through the agent's `/files` (best effort: a
 * description of what went wrong instead when it cannot be read), for a boot that failed.
 */
export async function startLogTail(vsockPath: string, maxChars = 2_000): Promise<string> {
  try {
    const res = await agentRequest(
      vsockPath,
      "GET",
      `/files?path=${encodeURIComponent(START_LOG_PATH)}&username=root`,
      undefined,
      2_000,
    );
    if (res.status !== 200) return `(no start command log: ${res.status})`;
    return res.body.slice(-maxChars).trim();
  } catch (err) {
    return `(start command log unreadable: ${(err as Error).message})`;
  }
}
