import { createHash } from "node:crypto";

/**
 * The snapshot listing (`MANIFEST`) and the checks of a folder against it. Pure: no I/O.
 *
 * Format (README "Snapshots"):
 *   dnah.snapshot.files.v1\n
 *   <sha256 lower-case hex> <size decimal> <name>\n     one line per file, sorted by name
 * Its SHA-256 is what the snapshot service signs, so the listing has exactly one byte form:
 * the parser refuses anything `buildManifest` would not have written.
 */

export const MANIFEST_NAME = "MANIFEST";
export const MANIFEST_HEADER = "dnah.snapshot.files.v1";
/** A listing is a few lines per file; a bigger one is not ours (and is not read whole). */
export const MANIFEST_MAX_BYTES = 1024 * 1024;
export const SNAPSHOT_FILE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const SHA256_RE = /^[0-9a-f]{64}$/;
/** No leading zeros, so one size has one spelling; at most 2^53 - 1 (a JS safe integer). */
const SIZE_RE = /^(0|[1-9][0-9]{0,15})$/;

export interface SnapshotFileEntry {
  readonly name: string;
  readonly size: number;
  /** Lower-case hex SHA-256 of the file's bytes. */
  readonly sha256: string;
}

export class ManifestFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ManifestFormatError";
  }
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function checkEntry(e: SnapshotFileEntry, where: string): void {
  if (!SNAPSHOT_FILE_NAME_RE.test(e.name) || e.name === MANIFEST_NAME)
    throw new ManifestFormatError(`${where}: invalid file name ${JSON.stringify(e.name)}`);
  if (!SHA256_RE.test(e.sha256))
    throw new ManifestFormatError(`${where}: sha256 is not 64 lower-case hex digits`);
  if (!Number.isSafeInteger(e.size) || e.size < 0) throw new ManifestFormatError(`${where}: invalid size`);
}

/** Byte order of ASCII names (every valid name is ASCII, so code units are bytes). */
function byName(a: SnapshotFileEntry, b: SnapshotFileEntry): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** The MANIFEST bytes for these files (any order in; sorted out). */
export function buildManifest(files: readonly SnapshotFileEntry[]): Buffer {
  const sorted = [...files].sort(byName);
  const lines = [MANIFEST_HEADER];
  for (let i = 0; i < sorted.length; i++) {
    const e = sorted[i]!;
    checkEntry(e, e.name);
    if (i > 0 && sorted[i - 1]!.name === e.name) throw new ManifestFormatError(`${e.name}: listed twice`);
    lines.push(`${e.sha256} ${e.size} ${e.name}`);
  }
  const bytes = Buffer.from(`${lines.join("\n")}\n`, "utf8");
  if (bytes.length > MANIFEST_MAX_BYTES) throw new ManifestFormatError("listing is too large");
  return bytes;
}

/** Parses MANIFEST bytes strictly; throws ManifestFormatError naming the first fault. */
export function parseManifest(bytes: Uint8Array): SnapshotFileEntry[] {
  if (bytes.length > MANIFEST_MAX_BYTES)
    throw new ManifestFormatError(`MANIFEST is larger than ${MANIFEST_MAX_BYTES} bytes`);
  const text = Buffer.from(bytes).toString("latin1");
  if (!/^[\x20-\x7e\n]*$/.test(text))
    throw new ManifestFormatError("MANIFEST has bytes other than printable ASCII");
  if (!text.endsWith("\n")) throw new ManifestFormatError("MANIFEST does not end with a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines[0] !== MANIFEST_HEADER)
    throw new ManifestFormatError(`MANIFEST does not start with '${MANIFEST_HEADER}'`);
  const entries: SnapshotFileEntry[] = [];
  for (let i = 1; i < lines.length; i++) {
    const where = `MANIFEST line ${i + 1}`;
    const parts = lines[i]!.split(" ");
    if (parts.length !== 3) throw new ManifestFormatError(`${where}: expected '<sha256> <size> <name>'`);
    const [sha256, sizeText, name] = parts as [string, string, string];
    if (!SIZE_RE.test(sizeText))
      throw new ManifestFormatError(`${where}: invalid size ${JSON.stringify(sizeText)}`);
    const entry = { name, size: Number(sizeText), sha256 };
    checkEntry(entry, where);
    const prev = entries[entries.length - 1];
    if (prev && byName(prev, entry) >= 0)
      throw new ManifestFormatError(
        `${where}: '${name}' ${prev.name === name ? "is listed twice" : "is out of order"}`,
      );
    entries.push(entry);
  }
  return entries;
}

export function totalSize(files: readonly SnapshotFileEntry[]): number {
  return files.reduce((n, f) => n + f.size, 0);
}

/** What was found in the folder for one name: its size, and its digest once hashed. */
export interface FoundFile {
  readonly name: string;
  readonly size: number;
  readonly sha256?: string | undefined;
}

/**
 * Differences between the signed listing and the files found, one sentence per file, in
 * name order. Files found without a digest are compared by size only (the store hashes only
 * once every size matches).
 */
export function compareFiles(listed: readonly SnapshotFileEntry[], found: readonly FoundFile[]): string[] {
  const have = new Map(found.map((f) => [f.name, f]));
  const problems: Array<[string, string]> = [];
  for (const l of listed) {
    const f = have.get(l.name);
    have.delete(l.name);
    if (!f) problems.push([l.name, `${l.name}: missing`]);
    else if (f.size < l.size)
      problems.push([l.name, `${l.name}: truncated (${f.size} bytes, signed ${l.size})`]);
    else if (f.size > l.size) problems.push([l.name, `${l.name}: grown (${f.size} bytes, signed ${l.size})`]);
    else if (f.sha256 !== undefined && f.sha256 !== l.sha256)
      problems.push([l.name, `${l.name}: changed (sha256 differs)`]);
  }
  for (const name of have.keys()) problems.push([name, `${name}: not in the signed listing`]);
  return problems.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map((p) => p[1]);
}

/**
 * Checks the listing itself against what was signed: its digest first (nothing in an
 * unsigned listing is believed), then the size.
 */
export function checkSignedListing(
  manifestBytes: Uint8Array,
  expectedSha256: string,
  expectedSize: number | bigint,
): { files: SnapshotFileEntry[]; problems: string[] } {
  if (sha256Hex(manifestBytes) !== expectedSha256)
    return { files: [], problems: ["MANIFEST does not match the signed digest"] };
  let files: SnapshotFileEntry[];
  try {
    files = parseManifest(manifestBytes);
  } catch (err) {
    return { files: [], problems: [(err as Error).message] };
  }
  const size = totalSize(files);
  if (BigInt(size) !== BigInt(expectedSize))
    return { files, problems: [`MANIFEST lists ${size} bytes, signed ${expectedSize}`] };
  return { files, problems: [] };
}
