/**
 * A stand-in for the Rust virtiofsd, for tests without it: checks the options the runtime
 * passes (a socket path, an existing shared folder, `--cache=never`) and listens on the
 * vhost-user socket so the CH stand-in's boot-time connect succeeds. It speaks no vhost-user
 * and serves no files.
 */
import { existsSync, statSync, unlinkSync } from "node:fs";
import { createServer, type Socket } from "node:net";

const opts = new Map<string, string>();
for (const a of process.argv.slice(2)) {
  const m = /^--([a-z-]+)=(.*)$/.exec(a);
  if (!m) {
    process.stderr.write(`virtiofsd-standin: unexpected argument ${a}\n`);
    process.exit(1);
  }
  opts.set(m[1]!, m[2]!);
}
const socket = opts.get("socket-path");
const shared = opts.get("shared-dir");
const problems: string[] = [];
if (!socket) problems.push("--socket-path is required");
if (!shared || !existsSync(shared) || !statSync(shared).isDirectory())
  problems.push("--shared-dir must be a folder");
if (opts.get("cache") !== "never") problems.push("dnah needs --cache=never (host writes seen at once)");
if (problems.length > 0) {
  process.stderr.write(`virtiofsd-standin: ${problems.join("; ")}\n`);
  process.exit(1);
}
const conns = new Set<Socket>();
const server = createServer((s) => {
  conns.add(s);
  s.on("close", () => conns.delete(s));
  s.on("error", () => {});
});
server.listen(socket!, () => process.stderr.write(`virtiofsd-standin: listening on ${socket}\n`));
process.on("SIGTERM", () => {
  try {
    unlinkSync(socket!);
  } catch {
    // gone
  }
  process.exit(0);
});
