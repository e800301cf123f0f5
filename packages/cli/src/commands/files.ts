import { createHash, randomBytes } from "node:crypto";
import { type FileHandle, open, rename, stat, unlink } from "node:fs/promises";
import { basename, join, posix } from "node:path";
import { DnahApiError } from "@dnah/mcp/client";
import type { Env } from "@dnah/platform";
import { apiClient, CliError, EXIT, out, printJson } from "../api.js";
import { progress } from "../progress.js";

/** `dnah files put|get`: one file, streamed both ways, never held whole in memory. */

/** Where the share is inside every sandbox; paths below it go straight to the host's folder. */
export const SHARE_MOUNT = "/mnt/dnah-share";
const CHUNK_BYTES = 1024 * 1024;

export interface FileOptions {
  json?: boolean;
}

/**
 * The gateway route of a sandbox path (pure). Paths under /mnt/dnah-share use the share route
 * (streamed end to end, any size, works while paused); others the agent's file route (the
 * gateway takes those whole, up to its file limit).
 */
export function fileRoute(sandboxId: string, remote: string): { url: string; share: boolean } {
  if (remote === "") throw new CliError("the sandbox path is empty", EXIT.usage);
  const sb = `/v1/sandboxes/${encodeURIComponent(sandboxId)}`;
  const normal = remote.startsWith("/") ? posix.normalize(remote) : remote;
  if (normal === SHARE_MOUNT || normal === `${SHARE_MOUNT}/`)
    throw new CliError(`${SHARE_MOUNT} is a folder: name a file in it`, EXIT.usage);
  if (normal.startsWith(`${SHARE_MOUNT}/`)) {
    const rel = normal.slice(SHARE_MOUNT.length + 1).replace(/\/+$/, "");
    return { url: `${sb}/share/${rel.split("/").map(encodeURIComponent).join("/")}`, share: true };
  }
  return { url: `${sb}/files?path=${encodeURIComponent(remote)}`, share: false };
}

/** The file's bytes as a stream read on demand, hashed and counted as they go. */
function fileStream(fh: FileHandle, onChunk: (chunk: Uint8Array) => void): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const buf = Buffer.allocUnsafe(CHUNK_BYTES);
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) {
          controller.close();
          return;
        }
        const chunk = buf.subarray(0, bytesRead);
        onChunk(chunk);
        controller.enqueue(chunk);
      },
    },
    { highWaterMark: 0 },
  );
}

function tooLarge(err: unknown, share: boolean): never {
  if (err instanceof DnahApiError && err.status === 413 && !share)
    throw new CliError(`${err.message} (files under ${SHARE_MOUNT} have no such limit)`);
  throw err;
}

/** `files put <id> <local> <remote>`: prints the sandbox path, or `{path, bytes, sha256}`. */
export async function filesPut(
  id: string,
  local: string,
  remote: string,
  opts: FileOptions,
  env: Env,
): Promise<void> {
  const client = apiClient(env);
  const route = fileRoute(id, remote);
  let fh: FileHandle;
  try {
    fh = await open(local, "r");
  } catch (err) {
    throw new CliError(
      `cannot read ${local}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new CliError(`${local} is not a regular file`, EXIT.usage);
    const hash = createHash("sha256");
    let bytes = 0;
    const bar = progress(`put ${basename(local)}`, st.size);
    const body = fileStream(fh, (chunk) => {
      hash.update(chunk);
      bytes += chunk.byteLength;
      bar.add(chunk.byteLength);
    });
    const url = route.share ? `${route.url}?digest=sha256` : route.url;
    // The bar ends its line whatever happens, so an error starts on a line of its own.
    const res = await client
      .request("PUT", url, { body, headers: { "content-length": String(st.size) } })
      .catch((err: unknown) => tooLarge(err, route.share))
      .finally(() => bar.done());
    const answer = (await res.json()) as { path?: string; sha256?: string };
    const sha256 = hash.digest("hex");
    if (bytes !== st.size)
      throw new CliError(`${local} changed while it was sent (${bytes} of ${st.size} bytes)`);
    // The share hashes what it wrote: the bytes arrived as they left.
    if (answer.sha256 !== undefined && answer.sha256 !== sha256)
      throw new CliError(`the sandbox stored other bytes than were sent (sha256 ${answer.sha256})`);
    // The share answers with its own relative path, the agent with the absolute one.
    const path = route.share || answer.path === undefined ? posix.normalize(remote) : answer.path;
    await (opts.json ? printJson({ path, bytes, sha256 }) : out(`${path}\n`));
  } finally {
    await fh.close();
  }
}

/**
 * `files get <id> <remote> <local>`: written to a temporary file beside `local` and renamed
 * into place once complete, so an interrupted download leaves no partial file. A `local`
 * that is a folder gets the remote file's name.
 */
export async function filesGet(
  id: string,
  remote: string,
  local: string,
  opts: FileOptions,
  env: Env,
): Promise<void> {
  const client = apiClient(env);
  const route = fileRoute(id, remote);
  const isDir = await stat(local).then(
    (s) => s.isDirectory(),
    () => false,
  );
  const dest = isDir ? join(local, posix.basename(remote)) : local;
  const res = await client.request("GET", route.url);
  const length = Number(res.headers.get("content-length") ?? Number.NaN);
  const total = Number.isFinite(length) ? length : undefined;
  const tmp = `${dest}.dnah-part-${randomBytes(4).toString("hex")}`;
  let fh: FileHandle;
  try {
    fh = await open(tmp, "wx");
  } catch (err) {
    await res.body?.cancel();
    throw new CliError(
      `cannot write ${dest}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  const hash = createHash("sha256");
  let bytes = 0;
  const bar = progress(`get ${posix.basename(remote)}`, total);
  try {
    const reader = res.body?.getReader();
    for (;;) {
      const next = await reader?.read();
      if (next === undefined || next.done) break;
      hash.update(next.value);
      bytes += next.value.byteLength;
      bar.add(next.value.byteLength);
      await fh.write(next.value);
    }
    bar.done();
    await fh.close();
    if (total !== undefined && bytes !== total)
      throw new CliError(`the download ended early (${bytes} of ${total} bytes)`);
    await rename(tmp, dest);
  } catch (err) {
    bar.done();
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await (opts.json ? printJson({ path: dest, bytes, sha256: hash.digest("hex") }) : out(`${dest}\n`));
}
