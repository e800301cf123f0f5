/** Version of this agent; the control plane gates features on it. */
export const GUEST_VERSION = "0.1.0";

/**
 * The E2B envd version whose wire behaviour the agent reproduces. Reported in `X-Envd-Version`
 * on `/health` and `/init`; the SDK gates features on the `envdVersion` the control API returns,
 * which must agree with this.
 */
export const ENVD_VERSION = "0.6.13";
