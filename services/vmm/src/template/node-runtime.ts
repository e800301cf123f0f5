import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * A self-contained copy of this host's Node binary with the exact shared libraries it links
 * (and their loader), so the agent runs inside any template rootfs regardless of its libc.
 * Cached in `<cacheDir>/node-runtime/<key>` keyed by the binary's hash.
 */
export async function ensureNodeRuntime(cacheDir: string, nodeBinary = process.execPath): Promise<string> {
  const hash = createHash("sha256")
    .update(await readFile(nodeBinary))
    .digest("hex")
    .slice(0, 16);
  const dir = join(cacheDir, "node-runtime", hash);
  if (existsSync(join(dir, "bin", "node"))) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(join(tmp, "bin"), { recursive: true });
  await mkdir(join(tmp, "lib"));
  await copyFile(nodeBinary, join(tmp, "bin", "node"));
  const { stdout } = await run("ldd", [nodeBinary]);
  let loader: string | undefined;
  for (const line of stdout.split("\n")) {
    const lib = /=>\s+(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+ld-linux\S*)/.exec(line)?.[1];
    if (!lib) continue;
    if (/ld-linux/.test(lib)) loader = lib;
    await copyFile(lib, join(tmp, "lib", basename(lib)));
  }
  if (!loader) throw new Error(`could not find the dynamic loader of ${nodeBinary} in ldd output`);
  if (basename(loader) !== "ld-linux-x86-64.so.2")
    await copyFile(loader, join(tmp, "lib", "ld-linux-x86-64.so.2"));
  await writeFile(join(tmp, "SOURCE"), `${nodeBinary}\n${process.version}\n`);
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  return dir;
}
