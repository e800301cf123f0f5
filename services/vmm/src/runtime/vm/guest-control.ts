import { dialGuestPort, GUEST_CONTROL_PORT } from "./vsock-front.js";

/**
 * A microVM's identity and the guest init's control port (`guest/image/init.c`, port 49981).
 *
 * Hostname rule, the same at boot and at restore, for qemu and Cloud Hypervisor alike:
 * `sandbox-<first 12 characters of the sandbox id>`. Every VM gets its own, so a fork's clones
 * differ from their source and from each other (the issue asks for a new hostname per clone);
 * the E2B-style "sandbox" prefix stays. Sandbox ids are `[a-z0-9]{1,64}`, so the name is a
 * valid hostname label (≤ 20 characters). The init writes it to /etc/hostname and maps it in
 * /etc/hosts (sudo must resolve it).
 */
export function guestHostname(sandboxId: string): string {
  return `sandbox-${sandboxId.slice(0, 12)}`;
}

/** What the host may tell a running guest's init in one control line. */
export interface GuestSettings {
  /** Hex bytes mixed into the kernel's pool and credited, then a forced CRNG reseed. */
  readonly seedHex: string;
  /** The host's clock (Unix seconds). */
  readonly clockSec: number;
  /** Mount the virtio-fs share with this tag again (its device was replugged). */
  readonly shareTag?: string;
  /** A new hostname (a restored clone's; see `guestHostname`). */
  readonly hostname?: string;
  /** A new sandbox id, kept by the init for the next agent start (a restored clone's). */
  readonly sandboxId?: string;
}

const WORD = /^[A-Za-z0-9._-]{1,128}$/;

/** The control line (no I/O): space-separated `key=value` words and a newline. */
export function controlLine(s: GuestSettings): string {
  const words: Array<[string, string]> = [
    ["seed", s.seedHex],
    ["clock", s.clockSec.toFixed(3)],
  ];
  if (s.shareTag !== undefined) words.push(["share", s.shareTag]);
  if (s.hostname !== undefined) words.push(["hostname", s.hostname]);
  if (s.sandboxId !== undefined) words.push(["id", s.sandboxId]);
  for (const [k, v] of words)
    if (!(k === "seed" ? /^[0-9a-f]{2,512}$/.test(v) : WORD.test(v)))
      throw new Error(`guest control: invalid ${k} ${JSON.stringify(v)}`);
  return `${words.map(([k, v]) => `${k}=${v}`).join(" ")}\n`;
}

/**
 * Sends one control line to the guest init over a VM's hybrid-vsock backend socket and
 * resolves once it answered `OK` (it applied every setting). Call only when the backend may
 * be dialled (the guest's vsock device is set up and the VM runs).
 */
export async function tellGuest(backendPath: string, s: GuestSettings, timeoutMs = 10_000): Promise<void> {
  const line = controlLine(s);
  const sock = await dialGuestPort(backendPath, GUEST_CONTROL_PORT, timeoutMs);
  try {
    const reply = new Promise<string>((resolve, reject) => {
      let buf = "";
      const timer = setTimeout(() => reject(new Error(`no reply within ${timeoutMs} ms`)), timeoutMs);
      sock.setEncoding("utf8");
      sock.on("data", (c: string) => {
        buf += c;
        const nl = buf.indexOf("\n");
        if (nl >= 0 || buf.length > 256) {
          clearTimeout(timer);
          resolve(buf.slice(0, nl >= 0 ? nl : 256));
        }
      });
      sock.once("end", () => {
        clearTimeout(timer);
        reject(new Error(`closed before a reply (${JSON.stringify(buf)})`));
      });
      sock.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    sock.resume();
    sock.write(line);
    const answer = await reply;
    if (answer !== "OK") throw new Error(`guest control port answered ${JSON.stringify(answer)}`);
  } finally {
    sock.destroy();
  }
}
