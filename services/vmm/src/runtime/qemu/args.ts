/**
 * The QEMU command line of one VM, as data (no I/O): machine, memory shared for the
 * vhost-user devices, direct kernel boot, root disk, TAP network, hybrid vsock and virtio-fs
 * (`qemu-microvm.md` §3). On q35 the vhost-user devices sit on their own PCIe root ports so
 * they can be unplugged for a snapshot and replugged after (§8.4).
 */
export type QemuMachine = "q35" | "microvm";

export interface QemuVmLayout {
  readonly machine: QemuMachine;
  /** Tried in order: `kvm` then `tcg` falls back to TCG where KVM cannot start. */
  readonly accelerators: readonly ("kvm" | "tcg")[];
  readonly cpuCount: number;
  readonly memoryMib: number;
  readonly kernel: string;
  readonly initramfs: string;
  readonly cmdline: string;
  readonly disk: { readonly path: string; readonly format: "raw" | "qcow2" };
  /** A TAP inside the VM's network namespace, with the guest's MAC. */
  readonly tap?: { readonly name: string; readonly mac: string };
  readonly vsockSocket: string;
  readonly fs?: { readonly socket: string; readonly tag: string };
  /** Where the serial console goes: QEMU's stdout, written there by the vmm. */
  readonly serialLog: string;
  readonly qmpSocket: string;
  /** TCG translation cache, MiB (QEMU's default of 1 GiB would count against the cgroup). */
  readonly tcgCacheMib: number;
  /**
   * A restore (q35 only): QEMU waits for `migrate-incoming` (`-incoming defer`) and starts
   * without the vhost-user devices, which are hot-plugged after the state is loaded (§8.4).
   */
  readonly incoming?: boolean;
}

/**
 * The q35 vhost-user devices, each on its own root port: the ids `snapshot.ts` unplugs and
 * replugs by, and that the command line below uses.
 */
export const VHOST_USER_Q35 = {
  vsock: { chardev: "vsc", id: "vsock0", bus: "rp1", driver: "vhost-user-vsock-pci" },
  fs: { chardev: "vfsc", id: "fs0", bus: "rp2", driver: "vhost-user-fs-pci" },
} as const;

export function qemuArgs(l: QemuVmLayout): string[] {
  const q35 = l.machine === "q35";
  const args = [
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
    ...l.accelerators.flatMap((a) => ["-accel", a === "tcg" ? `tcg,tb-size=${l.tcgCacheMib}` : a]),
    ...["-cpu", "max", "-smp", String(l.cpuCount), "-m", `${l.memoryMib}M`],
    ...["-object", `memory-backend-memfd,id=mem,size=${l.memoryMib}M,share=on`],
    ...["-machine", `${l.machine},memory-backend=mem`],
    ...["-kernel", l.kernel, "-initrd", l.initramfs, "-append", l.cmdline],
    // The vmm writes the console to `serialLog`, capped (`spawnSupervised`'s `stdoutFile`):
    // a `file:` chardev would let the guest's root fill the host's disk.
    ...["-serial", "stdio"],
    ...["-qmp", `unix:${l.qmpSocket},server=on,wait=off`],
    ...["-drive", `file=${l.disk.path},format=${l.disk.format},if=none,id=root,discard=unmap`],
    ...["-device", q35 ? "virtio-blk-pci,drive=root" : "virtio-blk-device,drive=root"],
  ];
  if (!q35) args.push("-global", "virtio-mmio.force-legacy=false");
  if (l.tap) {
    args.push("-netdev", `tap,id=net0,ifname=${l.tap.name},script=no,downscript=no`);
    args.push("-device", `${q35 ? "virtio-net-pci" : "virtio-net-device"},netdev=net0,mac=${l.tap.mac}`);
  }
  if (q35) {
    args.push("-device", "pcie-root-port,id=rp1,chassis=1,slot=1");
    args.push("-device", "pcie-root-port,id=rp2,chassis=2,slot=2");
  }
  if (l.incoming) {
    if (!q35) throw new Error("a microvm cannot be restored: virtio-mmio has no hotplug");
    args.push("-incoming", "defer");
    return args;
  }
  args.push("-chardev", `socket,id=vsc,path=${l.vsockSocket}`);
  args.push(
    "-device",
    q35
      ? "vhost-user-vsock-pci,chardev=vsc,id=vsock0,bus=rp1"
      : "vhost-user-vsock-device,chardev=vsc,id=vsock0",
  );
  if (l.fs) {
    args.push("-chardev", `socket,id=vfsc,path=${l.fs.socket}`);
    args.push(
      "-device",
      q35
        ? `vhost-user-fs-pci,chardev=vfsc,tag=${l.fs.tag},id=fs0,bus=rp2`
        : `vhost-user-fs-device,chardev=vfsc,tag=${l.fs.tag},id=fs0`,
    );
  }
  return args;
}

/**
 * The kernel command line. microvm needs `tsc_early_khz` under TCG (its TSC calibration hangs
 * on about 5 % of boots without it, §2.3); q35 has HPET and the ACPI PM timer.
 */
export function guestCmdline(o: {
  machine: QemuMachine;
  sandboxId: string;
  hostname: string;
  shareTag: string | undefined;
  seedHex: string;
  clockSec: number;
  net: string | undefined;
  tscKhz: number | undefined;
}): string {
  return [
    "console=ttyS0",
    "panic=-1",
    "quiet",
    ...(o.machine === "microvm" && o.tscKhz ? [`tsc_early_khz=${o.tscKhz}`] : []),
    `dnah.id=${o.sandboxId}`,
    `dnah.hostname=${o.hostname}`,
    ...(o.shareTag ? [`dnah.share=${o.shareTag}`] : []),
    `dnah.seed=${o.seedHex}`,
    `dnah.clock=${(o.clockSec).toFixed(3)}`,
    ...(o.net ? [o.net] : []),
  ].join(" ");
}
