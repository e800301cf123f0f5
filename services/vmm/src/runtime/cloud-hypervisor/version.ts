/**
 * Which Cloud Hypervisor release behaves how (spec: cloud-hypervisor.md §1.3, §1.8), keyed
 * on `vmm.ping`'s `version` (the crate version, "53.0.0"). Pure.
 */

export interface ChVersion {
  readonly major: number;
  readonly minor: number;
  /** As CH reported it. */
  readonly text: string;
}

/**
 * The oldest release dnah drives: v51 is the first that honours `image_type` and a qcow2
 * disk's backing file (`backing_files: true`), which the copy-on-write root disk needs on
 * filesystems without reflinks.
 */
export const MIN_CH_MAJOR = 51;

export interface ChFeatures {
  /** Error bodies are a JSON array of messages, top error first (else plain text). v47+. */
  readonly jsonErrorBodies: boolean;
  /** `RestoreConfig.resume` (and OnDemand restore) exist. v52+. */
  readonly restoreResume: boolean;
  /** "VM not created" answers 404 instead of 500. v53+. */
  readonly notCreatedIs404: boolean;
}

/** Parses "53.0.0", "v53.0", "cloud-hypervisor v53.0-246-gae44c2971"; undefined if none. */
export function parseChVersion(text: string): ChVersion | undefined {
  const m = /(?:^|[^\d.])v?(\d{1,4})\.(\d{1,4})(?:\.\d+)?/.exec(` ${text.trim()}`);
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), text: text.trim() };
}

export function featuresOf(v: ChVersion): ChFeatures {
  return {
    jsonErrorBodies: v.major >= 47,
    restoreResume: v.major >= 52,
    notCreatedIs404: v.major >= 53,
  };
}

/** Why dnah cannot drive this release, or undefined when it can. */
export function unsupportedReason(v: ChVersion): string | undefined {
  if (v.major < MIN_CH_MAJOR)
    return `cloud-hypervisor ${v.text} is too old: dnah needs v${MIN_CH_MAJOR}.0 or later (disk image_type and qcow2 backing files)`;
  return undefined;
}
