/**
 * Guest ports, in one place. The host reaches them through the hybrid-vsock handshake
 * (`CONNECT <port>\n`); every port other than the agent's own is forwarded to
 * `127.0.0.1:<port>` inside the sandbox.
 */

/** The agent itself: envd's Connect RPCs and plain-HTTP routes. */
export const AGENT_PORT = 49983;

/** The code-interpreter server (`@e2b/code-interpreter`); served by the template, forwarded. */
export const CODE_INTERPRETER_PORT = 49999;

export const MIN_PORT = 1;
export const MAX_PORT = 65535;
