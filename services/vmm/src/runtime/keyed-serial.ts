/**
 * One queue per key: `run(id, fn)` starts `fn` after every earlier `run` for the same id has
 * settled (fulfilled or rejected). Runtimes use it so pause, resume, snapshot and destroy of
 * one sandbox never interleave, while different sandboxes proceed in parallel.
 */
export class KeyedSerial {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    this.tails.set(id, tail);
    void tail.then(() => {
      if (this.tails.get(id) === tail) this.tails.delete(id);
    });
    return next;
  }
}
