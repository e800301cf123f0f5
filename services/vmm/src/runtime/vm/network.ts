import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * One network namespace per VM (the Firecracker/E2B clone layout, `cloud-hypervisor.md` §6 B):
 *
 *   host  dnv<slot> 10.12.x.y/31  <-veth->  eth0 10.12.x.y+1/31  [netns <scope>.<id>]
 *                                           tap0 169.254.0.22/30 <-> guest eth0 169.254.0.21
 *
 * Every VM sees the same TAP name, addresses and MAC, so a snapshot resumes anywhere; there is
 * no bridge and no shared L2. Inside the namespace the guest is masqueraded to the veth
 * address and the host masquerades 10.12.0.0/16 out of its uplink. Forwarding from the TAP to
 * private and link-local ranges is dropped (no VM reaches another VM, the host's services or a
 * metadata address); with egress off, everything from the TAP is dropped.
 */
export interface VmNetwork {
  readonly netns: string;
  /** The TAP inside the namespace the VMM opens. */
  readonly tap: string;
  readonly guestIp: string;
  readonly gatewayIp: string;
  readonly prefixLength: number;
  readonly guestMac: string;
  readonly egress: boolean;
  readonly slot: number;
}

const HOST_VETH_PREFIX = "dnv";
const VETH_CIDR = "10.12.0.0/16";
export const GUEST_IP = "169.254.0.21";
export const GATEWAY_IP = "169.254.0.22";
export const GUEST_MAC = "02:fc:00:00:00:05";
const TAP = "tap0";
const MAX_SLOTS = 32_768;
/** Ranges a guest may never reach through its TAP, egress or not. */
const BLOCKED = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"];

const usedSlots = new Set<number>();
/**
 * The host-wide rules, added once per process (concurrent VM starts would add them twice).
 * They are never taken away: they match only `dnv*` links and the veth range, so they do
 * nothing on a host without VMs, and removing them when a vmm's last VM went raced with
 * another vmm on the host starting one (it found them present, then lost them).
 */
let hostRules: Promise<void> | undefined;

/** A slot whose host veth exists belongs to another vmm on this host (or a crash): skip it. */
function freeSlot(): number {
  for (let slot = 0; slot < MAX_SLOTS; slot++)
    if (!usedSlots.has(slot) && !existsSync(`/sys/class/net/${HOST_VETH_PREFIX}${slot}`)) return slot;
  throw new Error("no free VM network slot");
}

function vethAddresses(slot: number): { host: string; ns: string } {
  const n = slot * 2;
  const a = (v: number) => `10.12.${v >> 8}.${v & 255}`;
  return { host: a(n), ns: a(n + 1) };
}

/**
 * The namespace of a sandbox: `<scope>.<id>`, the scope being the vmm's own name on the host
 * (its cgroup parent), so `listVmNetworks` never returns another vmm's namespaces.
 */
export function netnsName(scope: string, sandboxId: string): string {
  return `${scope}.${sandboxId}`;
}

type Env = Readonly<Record<string, string>>;

async function sh(env: Env, cmd: string, args: string[]): Promise<void> {
  try {
    await run(cmd, args, { env, timeout: 15_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")}: ${(e.stderr ?? e.message).trim()}`, { cause: err });
  }
}

/** Runs `iptables -C` (check) and, when the rule is missing, the same rule with `add`. */
async function ensureRule(env: Env, ns: string | undefined, table: string, add: string, rule: string[]) {
  const pre = ns ? ["netns", "exec", ns, "iptables"] : [];
  const cmd = ns ? "ip" : "iptables";
  try {
    await run(cmd, [...pre, "-w", "-t", table, "-C", ...rule], { env, timeout: 15_000 });
  } catch {
    await sh(env, cmd, [...pre, "-w", "-t", table, add, ...rule]);
  }
}

/**
 * Host-wide rules, once: forwarding on, masquerade of the VMs' veth range out of the uplink,
 * and no packets from a VM's veth to the host itself.
 */
const HOST_RULES: ReadonlyArray<{ table: string; add: string; rule: string[] }> = [
  {
    table: "nat",
    add: "-A",
    rule: ["POSTROUTING", "-s", VETH_CIDR, "!", "-o", `${HOST_VETH_PREFIX}+`, "-j", "MASQUERADE"],
  },
  { table: "filter", add: "-I", rule: ["INPUT", "-i", `${HOST_VETH_PREFIX}+`, "-j", "DROP"] },
  {
    table: "filter",
    add: "-I",
    rule: ["FORWARD", "-i", `${HOST_VETH_PREFIX}+`, "-o", `${HOST_VETH_PREFIX}+`, "-j", "DROP"],
  },
];

async function ensureHostRules(env: Env): Promise<void> {
  await sh(env, "sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"]);
  for (const r of HOST_RULES) await ensureRule(env, undefined, r.table, r.add, r.rule);
}

/**
 * Adds the host end of a VM's veth pair on a free slot. Another vmm on the host may take the
 * same slot between the check and the add: the add then fails with "File exists", and the
 * next free slot is tried.
 */
async function addVeth(env: Env, netns: string): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const slot = freeSlot();
    usedSlots.add(slot);
    try {
      await sh(env, "ip", [
        "link",
        "add",
        `${HOST_VETH_PREFIX}${slot}`,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        netns,
      ]);
      return slot;
    } catch (err) {
      usedSlots.delete(slot);
      if (attempt >= 16 || !/File exists/i.test((err as Error).message)) throw err;
    }
  }
}

/** Creates the namespace, veth pair, TAP and filter rules of one VM. */
export async function createVmNetwork(
  scope: string,
  sandboxId: string,
  egress: boolean,
  env: Env,
): Promise<VmNetwork> {
  const netns = netnsName(scope, sandboxId);
  const inNs = (cmd: string, ...args: string[]) => sh(env, "ip", ["netns", "exec", netns, cmd, ...args]);
  let slot = -1;
  try {
    await sh(env, "ip", ["netns", "add", netns]);
    await inNs("ip", "link", "set", "lo", "up");
    slot = await addVeth(env, netns);
    const hostVeth = `${HOST_VETH_PREFIX}${slot}`;
    const { host, ns } = vethAddresses(slot);
    await sh(env, "ip", ["addr", "add", `${host}/31`, "dev", hostVeth]);
    await sh(env, "ip", ["link", "set", hostVeth, "up"]);
    await inNs("ip", "addr", "add", `${ns}/31`, "dev", "eth0");
    await inNs("ip", "link", "set", "eth0", "up");
    await inNs("ip", "tuntap", "add", "dev", TAP, "mode", "tap");
    await inNs("ip", "addr", "add", `${GATEWAY_IP}/30`, "dev", TAP);
    await inNs("ip", "link", "set", TAP, "up");
    await inNs("iptables", "-w", "-P", "FORWARD", "DROP");
    await inNs("iptables", "-w", "-P", "INPUT", "DROP");
    // The guest may not talk to the namespace itself either (nothing listens there anyway).
    await inNs("iptables", "-w", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT");
    await inNs(
      "iptables",
      "-w",
      "-A",
      "INPUT",
      "-m",
      "conntrack",
      "--ctstate",
      "ESTABLISHED,RELATED",
      "-j",
      "ACCEPT",
    );
    if (egress) {
      await inNs("ip", "route", "add", "default", "via", host);
      await inNs("sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
      for (const cidr of BLOCKED)
        await inNs("iptables", "-w", "-A", "FORWARD", "-i", TAP, "-d", cidr, "-j", "DROP");
      await inNs("iptables", "-w", "-A", "FORWARD", "-i", TAP, "-o", "eth0", "-j", "ACCEPT");
      await inNs(
        "iptables",
        "-w",
        "-A",
        "FORWARD",
        "-i",
        "eth0",
        "-o",
        TAP,
        "-m",
        "conntrack",
        "--ctstate",
        "ESTABLISHED,RELATED",
        "-j",
        "ACCEPT",
      );
      await inNs("iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE");
      hostRules ??= ensureHostRules(env).catch((err: Error) => {
        hostRules = undefined;
        throw err;
      });
      await hostRules;
    }
    return {
      netns,
      tap: TAP,
      guestIp: GUEST_IP,
      gatewayIp: GATEWAY_IP,
      prefixLength: 30,
      guestMac: GUEST_MAC,
      egress,
      slot,
    };
  } catch (err) {
    await removeVmNetwork({ netns, slot }, env).catch(() => {});
    throw err;
  }
}

/**
 * For processes run in the namespace itself (template builds, not a VM behind the TAP): the
 * same egress, with the same ranges blocked on the way out, except DNS to `nameservers` (the
 * host's resolvers, often on a private address).
 */
export async function restrictNamespaceOutput(
  net: Pick<VmNetwork, "netns">,
  nameservers: readonly string[],
  env: Env,
): Promise<void> {
  const inNs = (...args: string[]) => sh(env, "ip", ["netns", "exec", net.netns, "iptables", "-w", ...args]);
  await inNs("-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT");
  for (const ns of nameservers)
    for (const proto of ["udp", "tcp"])
      await inNs("-A", "OUTPUT", "-d", ns, "-p", proto, "--dport", "53", "-j", "ACCEPT");
  for (const cidr of BLOCKED) await inNs("-A", "OUTPUT", "-d", cidr, "-j", "DROP");
}

/**
 * Removes a VM's namespace; deleting it deletes the veth pair and the TAP with it. A missing
 * namespace is fine.
 */
export async function removeVmNetwork(net: Pick<VmNetwork, "netns" | "slot">, env: Env): Promise<void> {
  try {
    await run("ip", ["netns", "del", net.netns], { env, timeout: 15_000 });
  } catch (err) {
    const msg = (err as { stderr?: string }).stderr ?? "";
    if (!/No such file|Invalid argument|not found/i.test(msg))
      throw new Error(`ip netns del ${net.netns}: ${msg}`);
  }
  usedSlots.delete(net.slot);
}

/** Sandbox ids that have a namespace of this scope, for `reclaimOrphans`. */
export async function listVmNetworks(scope: string): Promise<string[]> {
  try {
    const prefix = `${scope}.`;
    return (await readdir("/run/netns"))
      .filter((n) => n.startsWith(prefix))
      .map((n) => n.slice(prefix.length));
  } catch {
    return [];
  }
}

/** The `ip=`-style settings the guest init applies to its eth0 (kernel command line). */
export function guestNetCmdline(net: VmNetwork): string {
  return `dnah.ip=${net.guestIp}/${net.prefixLength} dnah.gw=${net.egress ? net.gatewayIp : "none"}`;
}
