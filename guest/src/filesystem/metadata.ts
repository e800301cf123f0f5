import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { Logger } from "../log.js";

/** envd keeps file metadata in `user.e2b.<key>` extended attributes. */
export const METADATA_XATTR_PREFIX = "user.e2b.";
const MAX_KEY_BYTES = 255 - METADATA_XATTR_PREFIX.length;
const MAX_TOTAL_BYTES = 4096;
/** The helper exits after this long without requests; the next request starts it again. */
const IDLE_MS = 30_000;

/**
 * Node has no xattr API, so a small long-lived Python helper (`python3 -I -S -c`) does the
 * syscalls; one JSON request per line on stdin, one answer per line on stdout.
 */
const XATTR_HELPER_SOURCE = String.raw`
import errno, json, os, sys

P = "user.e2b."
UNSUPPORTED = (errno.ENOTSUP, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP))


def utf8(s):
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def read(path):
    out = {}
    try:
        names = os.listxattr(path)
    except OSError:
        return out
    for name in names:
        if not name.startswith(P) or not utf8(name):
            continue
        try:
            out[name[len(P):]] = os.getxattr(path, name).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            pass
    return out


def replace(path, metadata):
    for name in os.listxattr(path):
        if name.startswith(P) and name[len(P):] not in metadata:
            try:
                os.removexattr(path, name)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise
    for key, value in metadata.items():
        os.setxattr(path, P + key, value.encode("utf-8"))


for line in sys.stdin:
    req = json.loads(line)
    res = {"id": req["id"]}
    try:
        if req["op"] == "read":
            res["ok"] = [read(p) for p in req["paths"]]
        else:
            replace(req["path"], req["metadata"])
            res["ok"] = True
    except OSError as e:
        res["errno"] = e.errno
        res["unsupported"] = e.errno in UNSUPPORTED
        res["error"] = e.strerror or str(e)
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
`;

export type Metadata = Record<string, string>;

/** Why a set of metadata is refused (envd's ValidateMetadata), or undefined when valid. */
export function metadataProblem(metadata: Metadata): string | undefined {
  let total = 0;
  for (const [k, v] of Object.entries(metadata)) {
    if (k === "") return "metadata key must not be empty";
    if (k.length > MAX_KEY_BYTES) return `metadata key "${k}" exceeds ${MAX_KEY_BYTES} bytes`;
    for (const [label, s] of [
      ["key", k],
      [`value for key "${k}"`, v],
    ] as const) {
      for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c < 0x20 || c > 0x7e) {
          return `metadata ${label} contains non-printable-ASCII byte 0x${c.toString(16).padStart(2, "0")} at offset ${i}`;
        }
      }
    }
    total += METADATA_XATTR_PREFIX.length + k.length + v.length;
  }
  return total > MAX_TOTAL_BYTES
    ? `total metadata size ${total} exceeds ${MAX_TOTAL_BYTES} bytes`
    : undefined;
}

/** `X-Metadata-<key>: <value>` request headers → metadata (keys lowercased, first value wins). */
export function metadataFromHeaders(headers: Record<string, string | string[] | undefined>): Metadata {
  const out: Metadata = {};
  for (const [name, value] of Object.entries(headers)) {
    if (!name.toLowerCase().startsWith("x-metadata-") || value === undefined) continue;
    const key = name.slice("x-metadata-".length).toLowerCase();
    const first = Array.isArray(value) ? value[0] : value;
    if (key !== "" && first !== undefined && !(key in out)) out[key] = first;
  }
  return out;
}

export class MetadataWriteError extends Error {
  constructor(
    message: string,
    readonly errno: number | undefined,
    readonly unsupported: boolean,
  ) {
    super(message);
    this.name = "MetadataWriteError";
  }
}

export interface MetadataStore {
  /** Metadata of each path (following symlinks); best-effort, `{}` when unreadable. */
  read(paths: string[]): Promise<Metadata[]>;
  /** Replaces the path's whole metadata set (an empty map clears it). */
  replace(path: string, metadata: Metadata): Promise<void>;
  close(): void;
}

interface Answer {
  id: number;
  ok?: unknown;
  errno?: number;
  unsupported?: boolean;
  error?: string;
}

/** One helper process and the answers it still owes. */
interface Helper {
  readonly proc: ChildProcessWithoutNullStreams;
  readonly pending: Map<number, (a: Answer) => void>;
}

/**
 * The xattr-backed store; the helper process starts on first use. Each helper has its own
 * pending answers: a helper stopped for idleness exits while its successor may already hold
 * requests, and its exit must fail only its own (it used to fail the successor's too, so a
 * file write racing an idle restart answered 500 "metadata helper exited"; seen under load).
 */
export function createXattrStore(pythonPath: string, log: Logger): MetadataStore {
  let current: Helper | undefined;
  let nextId = 1;
  let broken = false;
  let idle: NodeJS.Timeout | undefined;

  const stop = (): void => {
    current?.proc.stdin.end();
    current = undefined;
  };

  const start = (): Helper | undefined => {
    if (current) return current;
    if (broken) return undefined;
    let proc: ChildProcessWithoutNullStreams;
    try {
      proc = spawn(pythonPath, ["-I", "-S", "-c", XATTR_HELPER_SOURCE], { stdio: ["pipe", "pipe", "pipe"] });
    } catch (err) {
      broken = true;
      log.warn("file metadata unavailable: cannot start python3", { error: String(err) });
      return undefined;
    }
    const helper: Helper = { proc, pending: new Map() };
    proc.on("error", (err) => {
      broken = true;
      log.warn("file metadata unavailable: cannot start python3", { error: err.message });
    });
    proc.stdin.on("error", () => {});
    let stderr = "";
    proc.stderr.on("data", (c: Buffer) => {
      if (stderr.length < 2048) stderr += c.toString("utf8");
    });
    createInterface({ input: proc.stdout }).on("line", (line) => {
      let answer: Answer;
      try {
        answer = JSON.parse(line) as Answer;
      } catch {
        log.warn("metadata helper sent a bad line", { line: line.slice(0, 200) });
        return;
      }
      const resolve = helper.pending.get(answer.id);
      helper.pending.delete(answer.id);
      resolve?.(answer);
    });
    proc.on("exit", (code, signal) => {
      if (current === helper) current = undefined;
      if (code !== 0 || stderr !== "") {
        log.warn("metadata helper exited", { code, signal, stderr: stderr.trim() });
      }
      for (const [id, resolve] of helper.pending) resolve({ id, error: "metadata helper exited" });
      helper.pending.clear();
    });
    current = helper;
    return helper;
  };

  const call = (req: Record<string, unknown>): Promise<Answer> => {
    const helper = start();
    if (!helper) return Promise.resolve({ id: 0, unsupported: true, error: "metadata helper unavailable" });
    clearTimeout(idle);
    const id = nextId++;
    return new Promise<Answer>((resolve) => {
      helper.pending.set(id, resolve);
      helper.proc.stdin.write(`${JSON.stringify({ id, ...req })}\n`);
    }).finally(() => {
      if (current === helper && helper.pending.size === 0) {
        clearTimeout(idle);
        idle = setTimeout(stop, IDLE_MS);
        idle.unref();
      }
    });
  };

  return {
    async read(paths) {
      if (paths.length === 0) return [];
      const answer = await call({ op: "read", paths });
      return Array.isArray(answer.ok) && answer.ok.length === paths.length
        ? (answer.ok as Metadata[])
        : paths.map(() => ({}));
    },
    async replace(path, metadata) {
      const answer = await call({ op: "replace", path, metadata });
      if (answer.ok === true) return;
      throw new MetadataWriteError(
        answer.error ?? "metadata write failed",
        answer.errno,
        answer.unsupported === true,
      );
    },
    close() {
      clearTimeout(idle);
      stop();
    },
  };
}

/** A store that keeps nothing (tests, or hosts without python3). */
export const noMetadata: MetadataStore = {
  read: async (paths) => paths.map(() => ({})),
  replace: async () => {},
  close() {},
};
