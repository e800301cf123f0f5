/**
 * A server stream over work that reports as it goes: yields what `run` pushes while it runs,
 * then returns its result (or throws its error) once everything pushed has been yielded.
 */
export async function* streamWhile<M, R>(run: (push: (m: M) => void) => Promise<R>): AsyncGenerator<M, R> {
  const pending: M[] = [];
  let wake: (() => void) | undefined;
  let outcome: { ok: R } | { err: unknown } | undefined;
  run((m) => {
    pending.push(m);
    wake?.();
  })
    .then(
      (ok) => {
        outcome = { ok };
      },
      (err: unknown) => {
        outcome = { err };
      },
    )
    .finally(() => wake?.());
  for (;;) {
    while (pending.length > 0) yield pending.shift()!;
    if (outcome !== undefined) break;
    await new Promise<void>((resolve) => {
      wake = resolve;
    });
    wake = undefined;
  }
  if ("err" in outcome) throw outcome.err;
  return outcome.ok;
}
