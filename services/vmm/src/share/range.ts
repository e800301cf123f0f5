/**
 * One HTTP byte range of a file of `size` bytes (pure): undefined for no (or an ignored)
 * Range header, "unsatisfiable" for a range outside the file. Several ranges are answered
 * with the whole file (RFC 9110 allows ignoring Range).
 */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | "unsatisfiable" | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (m === null) return undefined;
  const [, a, b] = m as unknown as [string, string, string];
  if (a === "" && b === "") return undefined;
  if (a === "") {
    const n = Number(b);
    if (n === 0) return "unsatisfiable";
    return size === 0 ? "unsatisfiable" : { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === "" ? size - 1 : Math.min(Number(b), size - 1);
  if (start >= size || (b !== "" && Number(b) < start)) return "unsatisfiable";
  return { start, end };
}
