/**
 * A one-line progress bar on stderr for long transfers. Hand-rolled (thirty lines) rather than
 * a library: one bar, one line, redrawn at most ten times a second, and nothing at all unless
 * stderr is a terminal and the transfer is large — pipes and logs never see carriage returns.
 */

/** Transfers smaller than this finish before a bar would be worth reading. */
export const PROGRESS_MIN_BYTES = 8 * 1024 * 1024;
const REDRAW_MS = 100;
const WIDTH = 30;

export interface Progress {
  add(bytes: number): void;
  done(): void;
}

const MIB = 1024 * 1024;

/** The bar's text (pure). `total` undefined: size unknown, no bar, just the count. */
export function progressLine(
  label: string,
  done: number,
  total: number | undefined,
  elapsedMs: number,
): string {
  const rate = elapsedMs > 0 ? done / MIB / (elapsedMs / 1000) : 0;
  const speed = `${rate.toFixed(1)} MiB/s`;
  if (total === undefined || total <= 0) return `${label} ${(done / MIB).toFixed(1)} MiB  ${speed}`;
  const frac = Math.min(1, done / total);
  const fill = Math.round(frac * WIDTH);
  const bar = `${"#".repeat(fill)}${"-".repeat(WIDTH - fill)}`;
  return `${label} [${bar}] ${String(Math.floor(frac * 100)).padStart(3)}%  ${(done / MIB).toFixed(1)}/${(total / MIB).toFixed(1)} MiB  ${speed}`;
}

/** A bar when stderr is a TTY and the transfer is large (or of unknown size); else a no-op. */
export function progress(
  label: string,
  total: number | undefined,
  stream: NodeJS.WriteStream = process.stderr,
): Progress {
  if (!stream.isTTY || (total !== undefined && total < PROGRESS_MIN_BYTES)) return { add() {}, done() {} };
  const start = Date.now();
  let done = 0;
  let drawn = 0;
  let ended = false;
  const draw = () => {
    drawn = Date.now();
    stream.write(`\r${progressLine(label, done, total, drawn - start)}\x1b[K`);
  };
  return {
    add(bytes) {
      done += bytes;
      if (Date.now() - drawn >= REDRAW_MS) draw();
    },
    /** Idempotent: the last state, then a newline. */
    done() {
      if (ended) return;
      ended = true;
      draw();
      stream.write("\n");
    },
  };
}
