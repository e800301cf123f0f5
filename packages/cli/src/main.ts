import { Command, CommanderError } from "commander";
import { collect, EXIT, exitCodeOf } from "./api.js";

const program = new Command()
  .name("dnah")
  .description("Self-hostable sandboxes for AI agents: drop-in for the E2B and Daytona SDKs.")
  // Usage errors throw (exit code 2, see the catch below) instead of exiting with 1, and
  // read like every other error; subcommands inherit both settings.
  .exitOverride()
  .configureOutput({ outputError: (str, write) => write(`dnah: ${str.replace(/^error: /, "")}`) })
  // `sandbox exec <id> ls -la` works without `--`: options after the id are the command's.
  .enablePositionalOptions();

program
  .command("dev")
  .description(
    "run every service in one process (jail runtime, embedded Postgres unless DATABASE_URL is set)",
  )
  .action(async () => {
    const { dev } = await import("./commands/dev.js");
    await dev(process.env);
  });

program
  .command("mcp")
  .description(
    "MCP server on stdio for coding agents (DNAH_URL, default http://127.0.0.1:3000; DNAH_API_KEY)",
  )
  .action(async () => {
    const { mcpStdio } = await import("./mcp/stdio.js");
    await mcpStdio(process.env);
  });

const template = program.command("template").description("build and inspect sandbox templates");
template
  .command("build")
  .argument("<id>", "template id, e.g. base")
  .option("--cache-dir <dir>", "where templates are cached (DNAH_CACHE_DIR)")
  .option("--mirror <url>", "Debian mirror (DNAH_DEBIAN_MIRROR)")
  .option("--force", "rebuild even if cached")
  .action(async (id: string, opts: { cacheDir?: string; mirror?: string; force?: boolean }) => {
    const { templateBuild } = await import("./commands/template.js");
    await templateBuild(id, opts, process.env);
  });
template
  .command("list")
  .description("the templates built in the cache, with size and build time")
  .option("--cache-dir <dir>", "where templates are cached (DNAH_CACHE_DIR)")
  .option("--json", "one JSON array instead of a table")
  .action(async (opts: { cacheDir?: string; json?: boolean }) => {
    const { templateList } = await import("./commands/template.js");
    await templateList(opts, process.env);
  });

const image = program.command("image").description("build microVM images (qemu, cloud-hypervisor runtimes)");
image
  .command("build")
  .argument("<template>", "template id, e.g. base")
  .option("--cache-dir <dir>", "where images are cached (DNAH_CACHE_DIR)")
  .option("--mirror <url>", "Debian mirror for the template (DNAH_DEBIAN_MIRROR)")
  .option("--agent-dir <dir>", "bundled guest agent folder (DNAH_AGENT_DIR; default guest/dist)")
  .option("--kernel-package <name>", "Debian kernel package (default: linux-image-cloud-amd64's)")
  .option("--force", "rebuild even if cached")
  .action(async (id: string, opts: import("./commands/image.js").ImageBuildOptions) => {
    const { imageBuild } = await import("./commands/image.js");
    await imageBuild(id, opts, process.env);
  });

const signingKeys = program
  .command("signing-keys")
  .description("list, rotate and retire the snapshot signing keys (the snapshot service's)");
const snapshotUrlOption = [
  "--snapshot-url <url>",
  "snapshot service URL (DNAH_SNAPSHOT_URL; default http://127.0.0.1:7003)",
] as const;
signingKeys
  .command("list")
  .description("every key: active, verifies, or retired")
  .option(...snapshotUrlOption)
  .action(async (opts: import("./commands/signing-keys.js").KeysOptions) => {
    const { keysList } = await import("./commands/signing-keys.js");
    await keysList(opts, process.env);
  });
signingKeys
  .command("rotate")
  .description("create a new active signing key; older keys keep verifying")
  .option(...snapshotUrlOption)
  .action(async (opts: import("./commands/signing-keys.js").KeysOptions) => {
    const { keysRotate } = await import("./commands/signing-keys.js");
    await keysRotate(opts, process.env);
  });
signingKeys
  .command("retire")
  .argument("<kid>", "the key to retire (not the active one: rotate first)")
  .description("stop a key from verifying: snapshots it signed are refused from then on")
  .option(...snapshotUrlOption)
  .action(async (kid: string, opts: import("./commands/signing-keys.js").KeysOptions) => {
    const { keysRetire } = await import("./commands/signing-keys.js");
    await keysRetire(kid, opts, process.env);
  });

const hosts = program
  .command("hosts")
  .description("the hosts (vmms) of the control plane: load, liveness, maintenance");
const schedulerUrlOption = [
  "--scheduler-url <url>",
  "scheduler URL (DNAH_SCHEDULER_URL; default http://127.0.0.1:7001)",
] as const;
hosts
  .command("list")
  .description("every host: live, draining or dead, with its load and labels")
  .option(...schedulerUrlOption)
  .option("--json", "one JSON array instead of a table")
  .action(async (opts: import("./commands/hosts.js").HostsOptions) => {
    const { hostsList } = await import("./commands/hosts.js");
    await hostsList(opts, process.env);
  });
for (const [name, draining] of [
  ["drain", true],
  ["undrain", false],
] as const)
  hosts
    .command(name)
    .argument("<host>", "the host id")
    .description(draining ? "maintenance: keep what it runs, place nothing new there" : "back in service")
    .option(...schedulerUrlOption)
    .option("--json", "the host as JSON")
    .action(async (hostId: string, opts: import("./commands/hosts.js").HostsOptions) => {
      const { hostsDrain } = await import("./commands/hosts.js");
      await hostsDrain(hostId, draining, opts, process.env);
    });

const sandbox = program
  .command("sandbox")
  .description(
    "create, run, copy and stop sandboxes (DNAH_URL, default http://127.0.0.1:3000; DNAH_API_KEY)",
  );
sandbox
  .command("create")
  .description("a new running sandbox; prints its id")
  .option("--template <id>", "template id (default base)")
  .option("--type <type>", "lifecycle preset: persistent (default) or ephemeral")
  .option("--metadata <key=value>", "a label (repeatable)", collect)
  .option("--env <key=value>", "an environment variable of its processes (repeatable)", collect)
  .option("--json", "the sandbox as JSON")
  .action(async (opts: import("./commands/sandbox.js").CreateOptions) => {
    const { sandboxCreate } = await import("./commands/sandbox.js");
    await sandboxCreate(opts, process.env);
  });
sandbox
  .command("list")
  .description("sandboxes (running and paused unless --state)")
  .option("--state <states>", "comma-separated: starting, running, paused, stopped, archived, lost")
  .option("--json", "one JSON array instead of a table")
  .action(async (opts: { state?: string; json?: boolean }) => {
    const { sandboxList } = await import("./commands/sandbox.js");
    await sandboxList(opts, process.env);
  });
sandbox
  .command("exec")
  .description(
    "run a command (its words joined, run by bash -l -c), streaming its output; exits with its code",
  )
  .argument("<id>", "the sandbox")
  .argument("<command...>", "the command, after --")
  .option("--cwd <dir>", "working directory (default the user's home)")
  .option("--env <key=value>", "an environment variable (repeatable)", collect)
  .passThroughOptions()
  .action(async (id: string, words: string[], opts: import("./commands/sandbox.js").ExecOptions) => {
    const { sandboxExec } = await import("./commands/sandbox.js");
    process.exitCode = await sandboxExec(id, words, opts, process.env);
  });
sandbox
  .command("shell")
  .description("an interactive terminal in the sandbox; exits with the shell's code")
  .argument("<id>", "the sandbox")
  .option("--cwd <dir>", "working directory (default the user's home)")
  .action(async (id: string, opts: { cwd?: string }) => {
    const { sandboxShell } = await import("./commands/shell.js");
    process.exitCode = await sandboxShell(id, opts, process.env);
  });
for (const [name, what] of [
  ["kill", "delete the sandbox (its disk and share go too)"],
  ["pause", "freeze it: memory and disk kept, no CPU used"],
  ["resume", "run a paused, stopped or archived sandbox again"],
] as const)
  sandbox
    .command(name)
    .description(what)
    .argument("<id>", "the sandbox")
    .option("--json", "the result as JSON")
    .action(async (id: string, opts: { json?: boolean }) => {
      const { sandboxAction } = await import("./commands/sandbox.js");
      await sandboxAction(name, id, opts, process.env);
    });
sandbox
  .command("fork")
  .description("running copies of a sandbox (memory, disk, share); prints their ids")
  .argument("<id>", "the sandbox")
  .option("--count <n>", "how many (default 1)")
  .option("--json", "the results as JSON")
  .action(async (id: string, opts: { count?: string; json?: boolean }) => {
    const { sandboxFork } = await import("./commands/sandbox.js");
    await sandboxFork(id, opts, process.env);
  });
sandbox
  .command("snapshot")
  .description("a signed snapshot of the sandbox; prints its id")
  .argument("<id>", "the sandbox")
  .option("--name <name>", "a unique name, usable instead of the id")
  .option("--json", "the snapshot as JSON")
  .action(async (id: string, opts: { name?: string; json?: boolean }) => {
    const { sandboxSnapshot } = await import("./commands/sandbox.js");
    await sandboxSnapshot(id, opts, process.env);
  });

const files = program
  .command("files")
  .description("copy a file into or out of a sandbox (paths under /mnt/dnah-share go through the share)");
files
  .command("put")
  .argument("<id>", "the sandbox")
  .argument("<local>", "the local file")
  .argument("<remote>", "the path in the sandbox")
  .option("--json", "{path, bytes, sha256}")
  .action(async (id: string, local: string, remote: string, opts: { json?: boolean }) => {
    const { filesPut } = await import("./commands/files.js");
    await filesPut(id, local, remote, opts, process.env);
  });
files
  .command("get")
  .argument("<id>", "the sandbox")
  .argument("<remote>", "the path in the sandbox")
  .argument("<local>", "the local file (or folder)")
  .option("--json", "{path, bytes, sha256}")
  .action(async (id: string, remote: string, local: string, opts: { json?: boolean }) => {
    const { filesGet } = await import("./commands/files.js");
    await filesGet(id, remote, local, opts, process.env);
  });

const keys = program
  .command("keys")
  .description("the gateway's API keys, in its Postgres (DATABASE_URL; DNAH_DB_SCHEMA)");
keys
  .command("create")
  .description("a new API key; the key is printed once and never stored")
  .requiredOption("--name <name>", "what the key is for")
  .option("--json", "{id, name, key}")
  .action(async (opts: { name: string; json?: boolean }) => {
    const { apiKeysCreate } = await import("./commands/api-keys.js");
    await apiKeysCreate(opts, process.env);
  });
keys
  .command("list")
  .description("every key: live or revoked")
  .option("--json", "one JSON array instead of a table")
  .action(async (opts: { json?: boolean }) => {
    const { apiKeysList } = await import("./commands/api-keys.js");
    await apiKeysList(opts, process.env);
  });
keys
  .command("revoke")
  .description("refuse a key from now on (gateways notice within 30 s)")
  .argument("<id>", "the key's id (from keys list)")
  .action(async (id: string) => {
    const { apiKeysRevoke } = await import("./commands/api-keys.js");
    await apiKeysRevoke(id, process.env);
  });

try {
  await program.parseAsync();
} catch (err) {
  if (err instanceof CommanderError) {
    // Commander has printed the usage error (or the help, or the version) already.
    process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  } else {
    // One line, never a stack trace.
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`dnah: ${message.replace(/\s*\n\s*/g, " ")}\n`);
    process.exitCode = exitCodeOf(err);
  }
}
