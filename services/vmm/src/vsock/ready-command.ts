import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Process } from "@dnah/proto/process/process_pb";
import { AGENT_PORT, vsockAgent } from "./agent-http.js";

const POLL_MS = 250;
const TRY_MS = 10_000;

/**
 * Runs a template's ready command (`bash -l -c`, as the template's user) through the agent
 * until it exits 0; rejects after `timeoutMs` with its last exit code and output, or when
 * `alive()` turns false.
 */
export async function waitForReadyCommand(
  vsockPath: string,
  command: string,
  user: string,
  timeoutMs: number,
  alive: () => boolean,
): Promise<void> {
  const agent = vsockAgent(vsockPath, AGENT_PORT);
  const client = createClient(
    Process,
    createConnectTransport({ baseUrl: "http://agent", httpVersion: "1.1", nodeOptions: { agent } }),
  );
  const headers = { authorization: `Basic ${Buffer.from(`${user}:`).toString("base64")}` };
  const deadline = Date.now() + timeoutMs;
  let last = "never ran";
  try {
    for (;;) {
      if (!alive()) throw new Error("the sandbox stopped");
      let code: number | undefined;
      let output = "";
      try {
        for await (const res of client.start(
          { process: { cmd: "/bin/bash", args: ["-l", "-c", command], envs: {} } },
          { headers, timeoutMs: Math.min(TRY_MS, Math.max(1, deadline - Date.now())) },
        )) {
          const ev = res.event?.event;
          if (ev?.case === "data") {
            const d = ev.value.output;
            if (d.case === "stdout" || d.case === "stderr")
              output = (output + new TextDecoder().decode(d.value)).slice(-500);
          } else if (ev?.case === "end") code = ev.value.exitCode;
        }
      } catch (err) {
        last = (err as Error).message;
      }
      if (code === 0) return;
      if (code !== undefined) last = `exit code ${code}${output.trim() ? `: ${output.trim()}` : ""}`;
      if (Date.now() + POLL_MS > deadline)
        throw new Error(`ready command (${command}) never succeeded: ${last}`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    agent.destroy();
  }
}
