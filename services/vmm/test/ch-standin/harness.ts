import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { truncate } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The stand-in executable (a shell script running main.ts under tsx). */
export const STANDIN_BIN = join(dirname(fileURLToPath(import.meta.url)), "cloud-hypervisor");
/** The virtiofsd stand-in: listens on its socket, serves nothing. */
export const VIRTIOFSD_STANDIN_BIN = join(dirname(fileURLToPath(import.meta.url)), "virtiofsd");

export interface StandinRecord {
  readonly pid: number;
  readonly method: string;
  readonly endpoint: string;
  readonly status: number;
  readonly violations: readonly string[];
}

/**
 * A wrapper executable that runs the stand-in as a given CH release and records every request
 * to a file, so a test can drive the real runtime code through `DNAH_CH_BIN` (the runtime
 * hands CH a clean environment) and then fail on any contract violation.
 */
export class StandinWrapper {
  readonly bin: string;
  readonly recordFile: string;

  constructor(
    readonly dir: string,
    readonly version = "53.0.0",
  ) {
    mkdirSync(dir, { recursive: true });
    this.bin = join(dir, `cloud-hypervisor-v${version}`);
    this.recordFile = join(dir, `requests-v${version}.jsonl`);
    writeFileSync(
      this.bin,
      [
        "#!/bin/sh",
        `export CH_STANDIN_VERSION='${version}'`,
        `export CH_STANDIN_RECORD='${this.recordFile}'`,
        // via sh: works even where a checkout lost the script's executable bit
        `exec /bin/sh '${STANDIN_BIN}' "$@"`,
        "",
      ].join("\n"),
    );
    chmodSync(this.bin, 0o755);
  }

  records(): StandinRecord[] {
    if (!existsSync(this.recordFile)) return [];
    return readFileSync(this.recordFile, "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as StandinRecord);
  }

  /** Every contract violation recorded so far, as "METHOD endpoint: problem". */
  violations(): string[] {
    return this.records().flatMap((r) => r.violations.map((v) => `${r.method} ${r.endpoint}: ${v}`));
  }

  /** Forgets the requests recorded so far (after a test that sends bad bodies on purpose). */
  reset(): void {
    rmSync(this.recordFile, { force: true });
  }
}

/** An executable that runs the virtiofsd stand-in (through sh, whatever the checkout's modes). */
export function virtiofsdWrapper(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, "virtiofsd");
  writeFileSync(bin, `#!/bin/sh\nexec /bin/sh '${VIRTIOFSD_STANDIN_BIN}' "$@"\n`);
  chmodSync(bin, 0o755);
  return bin;
}

/**
 * Files standing in for a guest image: placeholders for kernel and initramfs (no guest
 * boots) and a sparse raw root disk of `diskMib`.
 */
export async function fakeImage(
  dir: string,
  diskMib = 64,
): Promise<{ kernel: string; initramfs: string; rootDisk: string }> {
  mkdirSync(dir, { recursive: true });
  const kernel = join(dir, "vmlinuz");
  const initramfs = join(dir, "initramfs.cpio");
  const rootDisk = join(dir, "rootfs.ext4");
  writeFileSync(kernel, "not a kernel: cloud-hypervisor stand-in test\n");
  writeFileSync(initramfs, "not an initramfs\n");
  writeFileSync(rootDisk, "");
  await truncate(rootDisk, diskMib * 1024 * 1024);
  return { kernel, initramfs, rootDisk };
}
