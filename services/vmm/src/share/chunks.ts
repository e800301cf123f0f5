import { InvalidArgumentError } from "../domain/errors.js";
import { ShareError } from "./errors.js";

/** Inclusive byte ranges `[start, end]`, sorted and merged (what a chunked upload has received). */
export type Ranges = Array<[number, number]>;

/**
 * `Content-Range: bytes a-b/total` of one chunk (pure). The total must be known (no `*`); a
 * chunk is never empty. `size`, when the upload's size is already known, must equal the total.
 */
export function parseContentRange(
  header: string | undefined,
  size: number | undefined,
): { start: number; end: number; total: number } {
  if (header === undefined)
    throw new InvalidArgumentError("a chunk needs 'Content-Range: bytes <start>-<end>/<total>'");
  const m = /^bytes (\d{1,16})-(\d{1,16})\/(\d{1,16})$/.exec(header.trim());
  if (m === null)
    throw new InvalidArgumentError(
      `Content-Range '${header.slice(0, 100)}' is not 'bytes <start>-<end>/<total>' (inclusive end, known total)`,
    );
  const [start, end, total] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (size !== undefined && total !== size)
    throw new ShareError(416, "out_of_range", `the upload is ${size} bytes, not ${total}`);
  if (start > end) throw new InvalidArgumentError(`Content-Range start ${start} is after its end ${end}`);
  if (end >= total)
    throw new ShareError(416, "out_of_range", `bytes ${start}-${end} end past the upload's ${total} bytes`);
  return { start, end, total };
}

/** `ranges` with `[start, end]` added, merged with what it overlaps or touches (pure). */
export function addRange(ranges: Ranges, start: number, end: number): Ranges {
  const out: Ranges = [];
  let s = start;
  let e = end;
  let placed = false;
  for (const [a, b] of ranges) {
    if (b + 1 < s) out.push([a, b]);
    else if (e + 1 < a) {
      if (!placed) out.push([s, e]);
      placed = true;
      out.push([a, b]);
    } else {
      s = Math.min(s, a);
      e = Math.max(e, b);
    }
  }
  if (!placed) out.push([s, e]);
  return out;
}

/** The first byte range of `[0, size)` that `ranges` lacks, or undefined when all is there (pure). */
export function firstGap(ranges: Ranges, size: number): [number, number] | undefined {
  let next = 0;
  for (const [a, b] of ranges) {
    if (a > next) return [next, Math.min(a, size) - 1];
    next = Math.max(next, b + 1);
    if (next >= size) return undefined;
  }
  return next < size ? [next, size - 1] : undefined;
}
