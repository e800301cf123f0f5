/**
 * Until the returned function is called: on SIGINT or SIGTERM, says what it is cleaning up,
 * runs `cleanup` and exits 130, so a benchmark interrupted by hand leaves no sandbox, VM or
 * schema behind.
 */
export function cleanUpOnInterrupt(
  log: (msg: string) => void,
  what: string,
  cleanup: () => Promise<void>,
): () => void {
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: ${what}`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  return () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
}
