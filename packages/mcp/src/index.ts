export { DnahApiError, DnahClient } from "./client.js";
export {
  createDnahMcpServer,
  type DnahMcpOptions,
  SERVER_NAME,
  SERVER_VERSION,
  toolErrorText,
} from "./server.js";
export { EXEC_KEEP_BYTES, READ_LIMIT_BYTES, TOOLS, type ToolDef } from "./tools.js";
