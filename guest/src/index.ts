export { type Agent, type AgentOptions, createAgent, type HttpHandler } from "./agent.js";
export { createJsonLogger, type Logger, silentLogger } from "./log.js";
export { AGENT_PORT, CODE_INTERPRETER_PORT } from "./ports.js";
export { ENVD_VERSION, GUEST_VERSION } from "./version.js";
export { type HybridVsockListener, listenHybridVsock, parseConnectLine } from "./vsock.js";
