/**
 * What `/init` configures. Mutable by design: the orchestrator calls `/init` at boot and again
 * after every resume.
 */
export interface AgentState {
  defaultUser: string;
  defaultWorkdir: string | undefined;
  accessToken: string | undefined;
  sandboxId: string | undefined;
  templateId: string | undefined;
  /** `/init` `envVars`; later calls merge into it. */
  envVars: Map<string, string>;
}

export function createState(init: {
  defaultUser: string;
  sandboxId?: string;
  templateId?: string;
}): AgentState {
  return {
    defaultUser: init.defaultUser,
    defaultWorkdir: undefined,
    accessToken: undefined,
    sandboxId: init.sandboxId,
    templateId: init.templateId,
    envVars: new Map(),
  };
}

/** The sandbox-wide variables every process gets (and `GET /envs` returns), in envd's order. */
export function globalEnv(state: AgentState): Record<string, string> {
  const env: Record<string, string> = { E2B_SANDBOX: "true" };
  if (state.sandboxId !== undefined) {
    env.E2B_SANDBOX_ID = state.sandboxId;
    env.DNAH_SANDBOX_ID = state.sandboxId;
  }
  if (state.templateId !== undefined) env.E2B_TEMPLATE_ID = state.templateId;
  for (const [k, v] of state.envVars) env[k] = v;
  return env;
}
