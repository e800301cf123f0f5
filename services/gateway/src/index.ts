export { ACTIVITY_ROUTES, type ActivityRule, activityRule } from "./activity-routes.js";
export {
  type ApiKeyRow,
  ApiKeyVerifier,
  createApiKey,
  ensureDevKey,
  generateApiKey,
  hashApiKey,
  listApiKeys,
  revokeApiKey,
} from "./auth/api-keys.js";
export { configFromEnv, defaultConfig, type GatewayConfig } from "./config.js";
export { ERROR_TABLE, type ErrorKind, type ErrorResponse } from "./errors.js";
export { createGateway, type Gateway, type GatewayDeps } from "./gateway.js";
