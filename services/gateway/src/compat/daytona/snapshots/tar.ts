import { gunzipSync } from "node:zlib";
import { InvalidArgumentError } from "../../../errors.js";

/**
 * Daytona's build contexts, pure: the SDK uploads one uncompressed tar per `addLocalFile` /
 * `addLocalDir` / COPY source, and Daytona extracts every tar of a build into one context
 * root (later ones overwrite earlier ones). Here the tars are joined into one tar with the
 * same meaning (tar extraction lets a later entry replace an earlier one), which is the one
 * context a dnah Dockerfile build reads its COPY sources from.
 */

const BLOCK = 512;

/** A tar's bytes (gzip undone), checked to be a tar, and where its entries end. */
export function tarEntriesEnd(data: Uint8Array): { tar: Buffer; end: number } {
  let tar = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (tar.length >= 2 && tar[0] === 0x1f && tar[1] === 0x8b) {
    try {
      tar = gunzipSync(tar);
    } catch (err) {
      throw new InvalidArgumentError("the build context is gzip but cannot be decompressed", { cause: err });
    }
  }
  let off = 0;
  while (off + BLOCK <= tar.length) {
    const header = tar.subarray(off, off + BLOCK);
    if (header.every((b) => b === 0)) return { tar, end: off };
    if (!checksumOk(header))
      throw new InvalidArgumentError(`the build context is not a tar (bad header at byte ${off})`);
    const size = entrySize(header);
    off += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
  }
  if (off === tar.length) return { tar, end: off };
  throw new InvalidArgumentError("the build context is not a tar (truncated)");
}

/** The tars as one tar, in order (each one's end-of-archive blocks dropped, one added). */
export function joinTars(tars: readonly Uint8Array[]): Buffer {
  const parts: Buffer[] = [];
  for (const t of tars) {
    const { tar, end } = tarEntriesEnd(t);
    parts.push(tar.subarray(0, end));
  }
  parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}

function entrySize(header: Buffer): number {
  const field = header.subarray(124, 136);
  if ((field[0]! & 0x80) !== 0) {
    // GNU base-256: a big-endian number in the remaining bytes.
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return n;
  }
  const text = field.toString("latin1").replace(/\0.*$/s, "").trim();
  const n = text === "" ? 0 : Number.parseInt(text, 8);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new InvalidArgumentError("the build context is not a tar (bad size)");
  return n;
}

function checksumOk(header: Buffer): boolean {
  const stored = Number.parseInt(
    header.subarray(148, 156).toString("latin1").replace(/\0.*$/s, "").trim(),
    8,
  );
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
  return stored === sum;
}
