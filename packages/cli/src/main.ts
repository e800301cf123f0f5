import { Command } from "commander";
import { templateBuild } from "./commands/template.js";

const program = new Command()
  .name("dnah")
  .description("Self-hostable sandboxes for AI agents: drop-in for the E2B and Daytona SDKs.");

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
    await templateBuild(id, opts, process.env);
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

const keys = program
  .command("keys")
  .description("list, rotate and retire the snapshot signing keys (the snapshot service's)");
const snapshotUrlOption = [
  "--snapshot-url <url>",
  "snapshot service URL (DNAH_SNAPSHOT_URL; default http://127.0.0.1:7003)",
] as const;
keys
  .command("list")
  .description("every key: active, verifies, or retired")
  .option(...snapshotUrlOption)
  .action(async (opts: import("./commands/keys.js").KeysOptions) => {
    const { keysList } = await import("./commands/keys.js");
    await keysList(opts, process.env);
  });
keys
  .command("rotate")
  .description("create a new active signing key; older keys keep verifying")
  .option(...snapshotUrlOption)
  .action(async (opts: import("./commands/keys.js").KeysOptions) => {
    const { keysRotate } = await import("./commands/keys.js");
    await keysRotate(opts, process.env);
  });
keys
  .command("retire")
  .argument("<kid>", "the key to retire (not the active one: rotate first)")
  .description("stop a key from verifying: snapshots it signed are refused from then on")
  .option(...snapshotUrlOption)
  .action(async (kid: string, opts: import("./commands/keys.js").KeysOptions) => {
    const { keysRetire } = await import("./commands/keys.js");
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

try {
  await program.parseAsync();
} catch (err) {
  process.stderr.write(`dnah: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
