export {
  configFromEnv,
  DEFAULT_CACHE_DIR,
  DEFAULT_DEBIAN_MIRROR,
  DEFAULT_STATE_DIR,
  type VmmConfig,
} from "./config.js";
export type { Runtime } from "./runtime/runtime.js";
export { buildTemplate, findTemplate } from "./template/build.js";
export { ensureNodeRuntime } from "./template/node-runtime.js";
export { RECIPES } from "./template/recipes.js";
export { createVmm, type Vmm } from "./vmm.js";
export { dialVsock } from "./vsock/dialer.js";
