import { createServer, type Server } from "node:net";
import { parseArgs } from "node:util";
import { createAgent, findExecutable } from "./agent.js";
import { createJsonLogger } from "./log.js";
import { AGENT_PORT } from "./ports.js";
import { DEFAULT_PATH } from "./process/spawn.js";
import { DEFAULT_START_FILE, loadStartSpec, superviseStartCommand } from "./start-command.js";
import { ENVD_VERSION, GUEST_VERSION } from "./version.js";
import { FORWARDER_PORT, listenHybridVsock, listenVsockFd, parseVsockFdSpec } from "./vsock.js";

const USAGE = `usage: agent [--listen-unix <path>]... [--listen-tcp <host:port>]... [options]

  --listen-unix <path>       hybrid-vsock Unix socket (jail mode): "CONNECT <port>\\n" per connection
  --listen-unix-mode <oct>   permission bits of that socket file (default 600)
  --listen-tcp <host:port>   plain HTTP/1.1 + h2c on TCP (the agent port only; debugging, tests)
  --listen-vsock-fd <fd>:<port>
                             an AF_VSOCK listening socket inherited from the microVM's init,
                             bound to guest port <port>; port 49982 is the forwarder (each
                             connection starts with "CONNECT <port>\n")
  --default-user <name>      user until /init sets one (default "user")
  --start-file <path>        run the command that start.json describes, supervised
                             (default: ${DEFAULT_START_FILE} when it exists)
  --log-level <level>        debug | info | warn | error (default info)
  --version                  print versions and exit`;

const DRAIN_MS = 5_000;

interface Cli {
  unix: string[];
  unixMode: number;
  tcp: { host: string; port: number }[];
  vsockFds: { fd: number; port: number }[];
  defaultUser: string;
  logLevel: "debug" | "info" | "warn" | "error";
  startFile: string | undefined;
}

function parseCli(argv: string[]): Cli | "help" | "version" {
  const { values } = parseArgs({
    args: argv,
    options: {
      "listen-unix": { type: "string", multiple: true },
      "listen-unix-mode": { type: "string" },
      "listen-tcp": { type: "string", multiple: true },
      "listen-vsock-fd": { type: "string", multiple: true },
      "default-user": { type: "string" },
      "log-level": { type: "string" },
      "start-file": { type: "string" },
      help: { type: "boolean" },
      version: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) return "help";
  if (values.version) return "version";
  const problems: string[] = [];
  const tcp = (values["listen-tcp"] ?? []).flatMap((spec) => {
    const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(spec);
    const port = Number(m?.[3]);
    if (!m || port > 65535) {
      problems.push(`--listen-tcp ${spec}: expected <host:port>`);
      return [];
    }
    return [{ host: m[1] ?? m[2] ?? "127.0.0.1", port }];
  });
  const unix = values["listen-unix"] ?? [];
  const vsockFds = (values["listen-vsock-fd"] ?? []).flatMap((spec) => {
    const parsed = parseVsockFdSpec(spec);
    if (!parsed) problems.push(`--listen-vsock-fd ${spec}: expected <fd>:<port>`);
    return parsed ? [parsed] : [];
  });
  if (unix.length === 0 && tcp.length === 0 && vsockFds.length === 0)
    problems.push("give at least one --listen-unix, --listen-tcp or --listen-vsock-fd");
  const modeText = values["listen-unix-mode"] ?? "600";
  const unixMode = /^[0-7]{3,4}$/.test(modeText) ? Number.parseInt(modeText, 8) : Number.NaN;
  if (Number.isNaN(unixMode)) problems.push(`--listen-unix-mode ${modeText}: expected octal bits like 600`);
  const logLevel = values["log-level"] ?? "info";
  if (!["debug", "info", "warn", "error"].includes(logLevel))
    problems.push(`--log-level ${logLevel}: unknown level`);
  if (problems.length > 0) throw new Error(problems.join("; "));
  return {
    unix,
    unixMode,
    tcp,
    vsockFds,
    defaultUser: values["default-user"] ?? "user",
    logLevel: logLevel as Cli["logLevel"],
    startFile: values["start-file"],
  };
}

async function main(): Promise<void> {
  let cli: ReturnType<typeof parseCli>;
  try {
    cli = parseCli(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n${USAGE}\n`);
    process.exit(2);
  }
  if (cli === "help") {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (cli === "version") {
    process.stdout.write(`${JSON.stringify({ guest: GUEST_VERSION, envd: ENVD_VERSION })}\n`);
    return;
  }

  const log = createJsonLogger((line) => process.stderr.write(line), cli.logLevel, { service: "guest" });
  process.on("uncaughtException", (err) =>
    log.error("uncaught exception", { error: err.stack ?? err.message }),
  );
  process.on("unhandledRejection", (err) => log.error("unhandled rejection", { error: String(err) }));

  const agent = createAgent({ log, defaultUser: cli.defaultUser });
  const closers: (() => Promise<void>)[] = [];
  for (const path of cli.unix) {
    const l = await listenHybridVsock({
      path,
      mode: cli.unixMode,
      log,
      onConnection: agent.handleConnection,
    });
    closers.push(l.close);
  }
  for (const { fd, port } of cli.vsockFds) {
    const l = await listenVsockFd({
      fd,
      port,
      handshake: port === FORWARDER_PORT,
      log,
      onConnection: agent.handleConnection,
    });
    closers.push(l.close);
  }
  for (const { host, port } of cli.tcp) {
    const server: Server = createServer({ noDelay: true }, (s) => agent.handleConnection(s, AGENT_PORT));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  }
  // The template's start command (e.g. the code interpreter): an explicit --start-file must be
  // good; a broken default file is logged and the agent serves anyway (the vmm then reports
  // the start command as never ready).
  try {
    const spec = await loadStartSpec(cli.startFile ?? DEFAULT_START_FILE, cli.startFile !== undefined);
    if (spec) {
      const supervisor = superviseStartCommand({
        spec,
        state: agent.context.state,
        users: agent.context.users,
        pathEnv: DEFAULT_PATH,
        log,
        setprivPath: findExecutable("setpriv", DEFAULT_PATH),
      });
      closers.push(supervisor.close);
    }
  } catch (err) {
    if (cli.startFile !== undefined) {
      process.stderr.write(`--start-file: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(2);
    }
    log.error("start command not started", { error: String(err) });
  }
  log.info("guest agent ready", {
    version: GUEST_VERSION,
    envdVersion: ENVD_VERSION,
    pid: process.pid,
    listenUnix: cli.unix,
    listenTcp: cli.tcp.map((t) => `${t.host}:${t.port}`),
    listenVsock: cli.vsockFds.map((v) => v.port),
  });

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info("guest agent stopping", { signal });
    const bound = setTimeout(() => process.exit(0), DRAIN_MS);
    bound.unref();
    // Stop accepting first; the listeners finish closing once the agent has dropped its connections.
    const stopped = Promise.all(closers.map((c) => c()));
    agent
      .close()
      .then(() => stopped)
      .then(
        () => process.exit(0),
        (err: unknown) => {
          log.error("shutdown failed", { error: String(err) });
          process.exit(1);
        },
      );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

await main();
