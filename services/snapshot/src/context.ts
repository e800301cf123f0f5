import type { Logger } from "@dnah/platform";
import { NotReadyError } from "./domain/errors.js";
import type { KeyStore } from "./keys/store.js";

/** What the RPC handlers need; tests build it directly. */
export interface Context {
  readonly logger: Logger;
  /** The loaded key store; throws NotReadyError before start() and after close(). */
  keys(): KeyStore;
}

export function createContext(logger: Logger, current: () => KeyStore | undefined): Context {
  return {
    logger,
    keys() {
      const store = current();
      if (store === undefined) throw new NotReadyError();
      return store;
    },
  };
}
