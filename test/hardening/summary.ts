/**
 * One summary line per hardening area, in one format, so the suite's output can be grepped
 * into the table: `hardening | <area> | tried N | held N | failures N`.
 */
export interface AreaTally {
  readonly area: string;
  tried: number;
  held: number;
  /** One short line per failure (route, input, answer): the first few are printed. */
  readonly failures: string[];
}

export function tally(area: string): AreaTally {
  return { area, tried: 0, held: 0, failures: [] };
}

/** Counts one attack or case: held when `failure` is undefined. */
export function record(t: AreaTally, failure: string | undefined): void {
  t.tried += 1;
  if (failure === undefined) t.held += 1;
  else t.failures.push(failure);
}

export function summaryLine(t: AreaTally): string {
  return `hardening | ${t.area} | tried ${t.tried} | held ${t.held} | failures ${t.failures.length}`;
}

/** The summary line, then the first `max` failures, for `t.diagnostic`. */
export function summaryLines(t: AreaTally, max = 20): string[] {
  const shown = t.failures.slice(0, max).map((f) => `  failure: ${f}`);
  const more = t.failures.length > max ? [`  … ${t.failures.length - max} more`] : [];
  return [summaryLine(t), ...shown, ...more];
}
