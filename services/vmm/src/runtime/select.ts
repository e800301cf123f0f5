import { execFile } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { open } from "node:fs/promises";
import { delimiter, isAbsolute, join } from "node:path";
import { promisify } from "node:util";
import type { Logger } from "@dnah/platform";
import type { VmmConfig } from "../config.js";
import { ensureNodeRuntime } from "../template/node-runtime.js";
import { CloudHypervisorRuntime } from "./cloud-hypervisor/cloud-hypervisor.js";
import { findChImage } from "./cloud-hypervisor/image.js";
import { parseChVersion, unsupportedReason } from "./cloud-hypervisor/version.js";
import { JailRuntime } from "./jail/jail.js";
import { createQemuRuntime } from "./qemu/qemu.js";
import type { Runtime } from "./runtime.js";
import { shareFsMib } from "./share.js";
import { VmImages } from "./vm/flatten.js";
import { findVirtiofsd } from "./vm/virtiofsd.js";

const run = promisify(execFile);

export type RuntimeName = Runtime["name"];

/** What the host offers, found by trying things (not by reading cpuinfo flags). */
export interface HostProbe {
  /** The cloud-hypervisor executable, or why there is none. */
  readonly ch: { readonly path: string } | { readonly missing: string };
  /** true when /dev/kvm opens read-write, else why not. */
  readonly kvm: true | string;
}

export interface RuntimeDecision {
  readonly name: RuntimeName;
  /** For the log: why this runtime. */
  readonly reason: string;
  /** Set when the choice will work only partly (an explicit runtime without KVM). */
  readonly warning?: string;
}

/** Picks the runtime for `DNAH_RUNTIME`. Pure; throws when an explicit choice cannot work. */
export function decideRuntime(requested: VmmConfig["runtime"], probe: HostProbe): RuntimeDecision {
  const kvmNote = probe.kvm === true ? "/dev/kvm opens" : `no usable /dev/kvm (${probe.kvm})`;
  switch (requested) {
    case "jail":
      return { name: "jail", reason: "DNAH_RUNTIME=jail" };
    case "qemu":
      return { name: "qemu", reason: `DNAH_RUNTIME=qemu; ${kvmNote}` };
    case "cloud-hypervisor":
      if ("missing" in probe.ch) throw new Error(`DNAH_RUNTIME=cloud-hypervisor, but ${probe.ch.missing}`);
      return {
        name: "cloud-hypervisor",
        reason: `DNAH_RUNTIME=cloud-hypervisor (${probe.ch.path})`,
        ...(probe.kvm === true
          ? {}
          : { warning: `${kvmNote}: a real Cloud Hypervisor cannot boot VMs here` }),
      };
    case "auto":
      if ("missing" in probe.ch) return { name: "jail", reason: `auto: ${probe.ch.missing}` };
      if (probe.kvm !== true) return { name: "jail", reason: `auto: ${kvmNote}` };
      return { name: "cloud-hypervisor", reason: `auto: ${probe.ch.path} found and ${kvmNote}` };
  }
}

/** `name` on `pathEnv` (or `name` itself when it is a path) if executable. */
export function findExecutable(name: string, pathEnv: string): string | undefined {
  const candidates = isAbsolute(name) ? [name] : pathEnv.split(delimiter).map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}

export async function probeHost(
  cfg: Pick<VmmConfig, "chBin" | "hostPath">,
  kvmPath = "/dev/kvm",
): Promise<HostProbe> {
  const found = findExecutable(cfg.chBin ?? "cloud-hypervisor", cfg.hostPath);
  const ch = found
    ? { path: found }
    : {
        missing: cfg.chBin
          ? `DNAH_CH_BIN=${cfg.chBin} is not an executable file`
          : "no cloud-hypervisor on PATH (set DNAH_CH_BIN)",
      };
  let kvm: true | string = true;
  try {
    await (await open(kvmPath, "r+")).close();
  } catch (err) {
    kvm = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  }
  return { ch, kvm };
}

/** `cloud-hypervisor --version`, for the log (undefined when it does not answer in 5 s). */
export async function chVersionText(bin: string, hostPath: string): Promise<string | undefined> {
  try {
    const { stdout } = await run(bin, ["--version"], { env: { PATH: hostPath }, timeout: 5_000 });
    return stdout.trim().split("\n")[0];
  } catch {
    return undefined;
  }
}

/**
 * Builds the runtime `DNAH_RUNTIME` asks for (auto: Cloud Hypervisor when its binary exists
 * and /dev/kvm opens, else the jail) and logs the choice and why.
 */
export async function selectRuntime(cfg: VmmConfig, logger: Logger): Promise<Runtime> {
  const probe = await probeHost(cfg);
  const decision = decideRuntime(cfg.runtime, probe);
  if (decision.warning) logger.warn({ runtime: decision.name }, decision.warning);
  switch (decision.name) {
    case "cloud-hypervisor": {
      const binary = (probe.ch as { path: string }).path;
      const virtiofsd = findVirtiofsd();
      const version = await chVersionText(binary, cfg.hostPath);
      const parsed = version === undefined ? undefined : parseChVersion(version);
      const tooOld = parsed && unsupportedReason(parsed);
      if (tooOld) throw new Error(`${binary}: ${tooOld}`);
      if (!parsed)
        logger.warn({ binary }, "cloud-hypervisor --version gave no version; checking at each vmm.ping");
      const images = new VmImages({ cacheDir: cfg.cacheDir, hostPath: cfg.hostPath, logger });
      logger.info(
        {
          runtime: decision.name,
          why: decision.reason,
          version,
          share: virtiofsd ? virtiofsd.path : "none (no virtiofsd)",
        },
        "runtime selected",
      );
      return new CloudHypervisorRuntime({
        stateDir: cfg.stateDir,
        binary,
        cgroupParent: cfg.cgroupParent,
        pidsMax: cfg.pidsMax,
        hostPath: cfg.hostPath,
        logger,
        findImage: (t, log) => findChImage(images, t, log),
        egress: cfg.vmEgress,
        ...(virtiofsd ? { virtiofsd } : {}),
      });
    }
    case "qemu":
      logger.info({ runtime: decision.name, why: decision.reason }, "runtime selected");
      return createQemuRuntime(cfg, logger);
    case "jail":
      logger.info({ runtime: decision.name, why: decision.reason }, "runtime selected");
      return new JailRuntime({
        stateDir: cfg.stateDir,
        nodeRuntimeDir: await ensureNodeRuntime(cfg.cacheDir),
        agentDir: cfg.agentDir,
        cgroupParent: cfg.cgroupParent,
        pidsMax: cfg.pidsMax,
        diskMib: cfg.jailDiskMib,
        shareMib: shareFsMib(cfg.shareQuotaBytes),
        hostPath: cfg.hostPath,
        logger,
      });
  }
}
