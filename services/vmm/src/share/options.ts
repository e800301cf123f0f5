import { InvalidArgumentError } from "../domain/errors.js";

const SHA256_RE = /^[0-9a-f]{64}$/;

/** What an upload (a plain PUT or a chunked upload's `complete`) is asked for beyond its bytes. */
export interface UploadOptions {
  /** The sha256 the file must have (`x-dnah-sha256`, or `?sha256=`): else 422, nothing written. */
  want: string | undefined;
  /** Compute the sha256 and answer it: asked (`?digest=sha256`, `x-dnah-digest: sha256`, a bare `?sha256`) or implied by `want`. */
  digest: boolean;
  /** fsync the file and its folder before answering (`?durable=true`, `x-dnah-durable: 1`). */
  durable: boolean;
}

type Headers = Record<string, string | string[] | undefined>;
type Query = Record<string, string | undefined>;

const TRUE = new Set(["", "1", "true", "yes"]);
const FALSE = new Set(["0", "false", "no"]);

function flag(name: string, q: string | undefined, h: string | string[] | undefined): boolean {
  const v = q ?? h;
  if (v === undefined) return false;
  if (typeof v !== "string") throw new InvalidArgumentError(`${name} must be given once`);
  const s = v.trim().toLowerCase();
  if (TRUE.has(s)) return true;
  if (FALSE.has(s)) return false;
  throw new InvalidArgumentError(`${name} must be 'true' or 'false', not '${s.slice(0, 20)}'`);
}

/**
 * An upload's options from its query and headers (pure). By default an upload is a page-cache
 * write, like `cp`: no hashing and no fsync (the rename still makes the file appear whole or not
 * at all, it is just not forced to the disk before the answer).
 */
export function uploadOptions(query: Query, headers: Headers): UploadOptions {
  const w = query.sha256 !== undefined && query.sha256 !== "" ? query.sha256 : headers["x-dnah-sha256"];
  if (w !== undefined && (typeof w !== "string" || !SHA256_RE.test(w)))
    throw new InvalidArgumentError("x-dnah-sha256 must be 64 lower-case hex digits");
  const d = query.digest ?? headers["x-dnah-digest"];
  if (d !== undefined && d !== "sha256") throw new InvalidArgumentError("digest must be 'sha256'");
  return {
    want: w,
    // A bare `?sha256` (as on GET) asks for the digest.
    digest: w !== undefined || d === "sha256" || query.sha256 === "",
    durable: flag("durable", query.durable, headers["x-dnah-durable"]),
  };
}
