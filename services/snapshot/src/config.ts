import { resolve } from "node:path";
import { type Env, EnvReader } from "@dnah/platform";

export interface SnapshotConfig {
  /** Directory holding the Ed25519 keys (see keys/store.ts for the layout). */
  readonly keysDir: string;
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
}

export const DEFAULT_PORT = 7003;

/** Parses the service's settings; throws one ConfigError listing every problem. */
export function configFromEnv(env: Env): SnapshotConfig {
  const r = new EnvReader(env);
  const stateDir = r.str("DNAH_STATE_DIR", "/var/lib/dnah");
  const cfg: SnapshotConfig = {
    keysDir: resolve(r.str("DNAH_SNAPSHOT_KEYS_DIR", `${stateDir}/keys`)),
    host: r.str("DNAH_SNAPSHOT_HOST", "127.0.0.1"),
    port: r.int("DNAH_SNAPSHOT_PORT", DEFAULT_PORT, 0, 65535),
  };
  r.done();
  return Object.freeze(cfg);
}
