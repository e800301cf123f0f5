/** Parsers for the output of commands the toolbox runs in a sandbox. Pure. */

export interface Match {
  file: string;
  line: number;
  content: string;
}

/** `grep -rnZ` output (`file\0line:content\n`…) as Daytona's find results. */
export function parseGrepZ(out: string): Match[] {
  const matches: Match[] = [];
  for (const rec of out.split("\n")) {
    const nul = rec.indexOf("\0");
    if (nul < 0) continue;
    const rest = rec.slice(nul + 1);
    const colon = rest.indexOf(":");
    const line = Number(rest.slice(0, colon));
    if (colon < 0 || !Number.isInteger(line)) continue;
    matches.push({ file: rec.slice(0, nul), line, content: rest.slice(colon + 1) });
  }
  return matches;
}

/**
 * Finds an end-of-command marker in a byte stream that arrives in chunks. Bytes before the
 * marker are output; a tail that could be the start of the marker is held back until the next
 * chunk tells (so output is never delayed longer than that). `extra` fixed-length bytes after
 * the marker (an exit status) are part of it.
 */
export class MarkerScanner {
  private held: Buffer = Buffer.alloc(0);
  private readonly marker: Buffer;

  constructor(
    marker: string,
    private readonly extra = 0,
  ) {
    this.marker = Buffer.from(marker);
  }

  /**
   * Feeds a chunk. `output` is what belongs to the command; `found` is set (with the `extra`
   * bytes and whatever followed the marker in `rest`) once the whole marker has arrived.
   */
  feed(chunk: Buffer): { output: Buffer; found?: { extra: string; rest: Buffer } } {
    const buf = this.held.length === 0 ? chunk : Buffer.concat([this.held, chunk]);
    const at = buf.indexOf(this.marker);
    if (at >= 0) {
      const end = at + this.marker.length + this.extra;
      if (buf.length < end) {
        this.held = buf.subarray(at);
        return { output: buf.subarray(0, at) };
      }
      this.held = Buffer.alloc(0);
      return {
        output: buf.subarray(0, at),
        found: {
          extra: buf.subarray(at + this.marker.length, end).toString("latin1"),
          rest: buf.subarray(end),
        },
      };
    }
    const keep = partialSuffix(buf, this.marker);
    this.held = buf.subarray(buf.length - keep);
    return { output: buf.subarray(0, buf.length - keep) };
  }
}

/** The length of the longest suffix of `buf` that is a proper prefix of `marker`. */
export function partialSuffix(buf: Buffer, marker: Buffer): number {
  for (let n = Math.min(buf.length, marker.length - 1); n > 0; n--) {
    if (buf.subarray(buf.length - n).equals(marker.subarray(0, n))) return n;
  }
  return 0;
}
