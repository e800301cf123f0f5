import { spawn } from "node:child_process";

/**
 * GNU tar as a child process: it keeps owners (numeric, since a sandbox's users are not the
 * host's), modes, times, xattrs (overlay whiteouts and opaque-dir marks included) and
 * special files, which a JS archiver would each need to get right.
 */
const KEEP = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"];

/** `hostPath`: the PATH host tools run with (the vmm config's `hostPath`). */
function tar(args: string[], hostPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn("tar", args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { PATH: hostPath, LC_ALL: "C" },
    });
    let err = "";
    p.stderr.on("data", (c: Buffer) => {
      err = (err + c.toString("utf8")).slice(-2048);
    });
    p.on("error", reject);
    p.on("exit", (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`tar ${args[0]} failed (${signal ?? `exit ${code}`}): ${err.trim()}`));
    });
  });
}

/** Archives the contents of `dir` (not the folder's own name) into `file`. */
export function tarCreate(dir: string, file: string, hostPath: string): Promise<void> {
  return tar(["--create", "--file", file, ...KEEP, "--sparse", "--directory", dir, "."], hostPath);
}

/**
 * Extracts `file` into the existing folder `dir`, with the archive's owners and modes.
 * GNU tar's defaults refuse what could escape `dir`: leading `/` is stripped, members with
 * `..` are skipped, and links whose targets could be followed by later members are made as
 * placeholders until the end. The archive was checked against the signed listing before.
 */
export function tarExtract(file: string, dir: string, hostPath: string): Promise<void> {
  return tar(
    ["--extract", "--file", file, ...KEEP, "--same-owner", "--same-permissions", "--directory", dir],
    hostPath,
  );
}
