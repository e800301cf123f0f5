export { ConfigError, type Env, EnvReader } from "./config.js";
export { createServiceClient, createServiceServer, listen, type ServiceServerOptions } from "./connect.js";
export {
  DatabaseUnavailableError,
  type Db,
  type DbOptions,
  isConnectionError,
  migrate,
  openDb,
} from "./db.js";
export { createLogger, type Logger, silentLogger } from "./logger.js";
export {
  clientTracing,
  initTelemetry,
  injectTraceHeaders,
  serverTracing,
  type Telemetry,
  withIncomingTrace,
} from "./telemetry.js";
export { createTunnelAgent, type DialOptions, dialTunnel, TUNNEL_PROTOCOL, TunnelError } from "./tunnel.js";
export {
  type ControlKey,
  checkVmmToken,
  loadOrCreateControlKey,
  mintVmmToken,
  VMM_TOKEN_TTL_S,
  vmmAuthInterceptor,
  vmmAuthorization,
} from "./vmm-auth.js";
