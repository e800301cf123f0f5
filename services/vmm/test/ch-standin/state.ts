/**
 * The Cloud Hypervisor stand-in's model of one VMM: the VM state machine (spec
 * cloud-hypervisor.md §1.4) and the status codes and error bodies each release answers with
 * (§1.3). Pure: the server in main.ts does the I/O the transitions ask for.
 */

export type VmState = "Created" | "Running" | "Shutdown" | "Paused" | "BreakPoint";

export interface Version {
  readonly major: number;
  readonly minor: number;
}

/** An answer that is not a success. */
export interface Failure {
  readonly status: number;
  /** Error chain, top error first (as CH's `error_chain_messages`). */
  readonly chain: readonly string[];
}

/** What the server must do for an accepted request. */
export type Effect =
  | "none"
  | "store-config"
  | "start-devices"
  | "stop-devices"
  | "write-snapshot"
  | "restore-devices"
  | "exit";

export interface Step {
  /** The state after the call; undefined = no VM config at all. */
  readonly next: VmState | undefined;
  readonly effect: Effect;
}

/** Status and body of a failure, as `version` of CH would send them. */
export function errorResponse(f: Failure, v: Version): { status: number; body: string } {
  // Before v47 the body was the top error's Display as plain text.
  if (v.major < 47) return { status: f.status, body: f.chain[0] ?? "" };
  return { status: f.status, body: JSON.stringify(f.chain) };
}

/** "VM not created": 404 from v53, a 500 before (spec §1.3). */
function notCreated(v: Version, what: string): Failure {
  return { status: v.major >= 53 ? 404 : 500, chain: ["Error from API", what, "VM is not created"] };
}

/** A wrong-state call: always 500 (the documented 405 is never sent, spec §1.3). */
function wrongState(what: string, detail: string): Failure {
  return { status: 500, chain: ["Error from API", what, detail] };
}

/** Transitions allowed into each state (spec §1.4). */
const ALLOWED_FROM: Record<"Running" | "Paused" | "Shutdown", readonly VmState[]> = {
  Running: ["Created", "Paused", "Shutdown", "BreakPoint"],
  Paused: ["Running"],
  Shutdown: ["Running", "Paused", "Created"],
};

/**
 * The next state for `endpoint` from `state` (undefined = no config), or the failure CH
 * answers with. `resume` is RestoreConfig.resume (honoured from v52 only).
 */
export function transition(
  endpoint: string,
  state: VmState | undefined,
  v: Version,
  opts: { resume?: boolean } = {},
): Step | Failure {
  switch (endpoint) {
    case "vmm.ping":
      return { next: state, effect: "none" };
    case "vmm.shutdown":
      return { next: undefined, effect: "exit" };
    case "vm.create":
      if (state !== undefined) return wrongState("The VM could not be created", "VM is already created");
      return { next: "Created", effect: "store-config" };
    case "vm.info":
    case "vm.counters":
      if (state === undefined) return notCreated(v, "The VM information could not be retrieved");
      if (endpoint === "vm.counters" && (state === "Created" || state === "Shutdown"))
        return wrongState("The VM counters could not be retrieved", "VM is not booted");
      return { next: state, effect: "none" };
    case "vm.boot":
      if (state === undefined) return notCreated(v, "The VM could not boot");
      if (state !== "Created" && state !== "Shutdown")
        return wrongState("The VM could not boot", "VM is already booted");
      return { next: "Running", effect: "start-devices" };
    case "vm.pause":
      if (state === undefined) return notCreated(v, "The VM could not pause");
      if (!ALLOWED_FROM.Paused.includes(state))
        return wrongState("The VM could not pause", `Invalid VM state transition: ${state} to Paused`);
      return { next: "Paused", effect: "none" };
    case "vm.resume":
      if (state === undefined) return notCreated(v, "The VM could not resume");
      if (state !== "Paused")
        return wrongState("The VM could not resume", `Invalid VM state transition: ${state} to Running`);
      return { next: "Running", effect: "none" };
    case "vm.snapshot":
      if (state === undefined) return notCreated(v, "The VM could not be snapshotted");
      if (state !== "Paused")
        return wrongState("The VM could not be snapshotted", "Trying to snapshot while VM is running");
      return { next: "Paused", effect: "write-snapshot" };
    case "vm.restore":
      if (state !== undefined) return wrongState("The VM could not be restored", "VM is already created");
      return { next: opts.resume && v.major >= 52 ? "Running" : "Paused", effect: "restore-devices" };
    case "vm.shutdown":
      if (state === undefined) return notCreated(v, "The VM could not shut down");
      if (!ALLOWED_FROM.Shutdown.includes(state))
        return wrongState("The VM could not shut down", `Invalid VM state transition: ${state} to Shutdown`);
      // The VM object is dropped and the config kept: vm.info says Created again.
      return { next: "Created", effect: "stop-devices" };
    case "vm.delete":
      // Idempotent: 204 when nothing exists.
      return { next: undefined, effect: state === "Running" || state === "Paused" ? "stop-devices" : "none" };
    default:
      return { status: 404, chain: [`no route for ${endpoint}`] };
  }
}

export function isFailure(x: Step | Failure): x is Failure {
  return "status" in x;
}
