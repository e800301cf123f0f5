import { createReadStream, createWriteStream } from "node:fs";
import { lstat, open, readdir } from "node:fs/promises";
import { join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Progress } from "./backend.js";

const COPY_CHUNK = 1024 * 1024;

/** The plain files of a snapshot-shaped folder, refusing anything else (links, folders). */
export async function plainFiles(dir: string): Promise<{ name: string; size: number }[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const odd = entries.filter((e) => !e.isFile()).map((e) => e.name);
  if (odd.length > 0) throw new Error(`${dir} holds entries that are not plain files: ${odd.join(", ")}`);
  return Promise.all(
    entries.map(async (e) => ({ name: e.name, size: (await lstat(join(dir, e.name))).size })),
  );
}

/** Counts the bytes that pass (progress), passing them on untouched. */
export function counting(progress: Progress): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      progress(chunk.length);
      cb(null, chunk);
    },
  });
}

/** Streams a readable into a new file (never an existing one) and fsyncs it. */
export async function writeNewFile(
  path: string,
  from: NodeJS.ReadableStream,
  progress: Progress,
): Promise<void> {
  await pipeline(from, counting(progress), createWriteStream(path, { flags: "wx", mode: 0o600 }));
  await fsync(path);
}

/** Copies the plain files of `src` into the existing folder `dest`, each fsynced; bytes copied. */
export async function copyFiles(src: string, dest: string, progress: Progress): Promise<number> {
  let total = 0;
  for (const f of await plainFiles(src)) {
    await writeNewFile(
      join(dest, f.name),
      createReadStream(join(src, f.name), { highWaterMark: COPY_CHUNK }),
      progress,
    );
    total += f.size;
  }
  return total;
}

export async function fsync(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function isDir(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}
