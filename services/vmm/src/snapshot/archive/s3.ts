import { createReadStream } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { InvalidArgumentError, SNAPSHOT_ID_RE } from "../../domain/errors.js";
import { MANIFEST_NAME, SNAPSHOT_FILE_NAME_RE } from "../manifest.js";
import type { ArchiveBackend, Progress } from "./backend.js";
import { counting, plainFiles, writeNewFile } from "./files.js";

export interface S3ArchiveOptions {
  readonly bucket: string;
  /** Key prefix, "" or ending in "/" (e.g. "dnah-archive/"). */
  readonly prefix: string;
  /** An S3-compatible endpoint (MinIO, Ceph RGW, R2…); AWS when absent. */
  readonly endpoint?: string | undefined;
  readonly region: string;
  /** Path-style addressing (`<endpoint>/<bucket>/<key>`), which most self-hosted stores want. */
  readonly forcePathStyle: boolean;
}

/** Objects one DeleteObjects call may name (S3's limit). */
const DELETE_BATCH = 1_000;
/** Multipart part size for large files (S3's minimum is 5 MiB). */
const PART_BYTES = 16 * 1024 * 1024;

/**
 * Archive storage in an S3-compatible bucket: `<prefix><snapshot id>/<file>`, one object per
 * snapshot file, uploaded streamed (multipart for large files). MANIFEST is uploaded last and
 * is the mark of a complete archive: `has` asks for it, and a put first removes whatever an
 * earlier, interrupted put left. A restore verifies every file against the signed manifest
 * anyway, so a damaged object is refused there. Credentials come from the AWS SDK's default
 * chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance roles) and are never
 * logged. Addressed by `s3://<bucket>/<prefix><id>` URIs; only keys under this bucket and
 * prefix are ever read or removed, and only object names that are valid snapshot file names
 * are written to disk.
 */
export class S3Archive implements ArchiveBackend {
  private readonly s3: S3Client;

  constructor(private readonly opts: S3ArchiveOptions) {
    if (opts.prefix !== "" && !opts.prefix.endsWith("/"))
      throw new Error(`DNAH_ARCHIVE_S3_PREFIX must be empty or end in '/', got '${opts.prefix}'`);
    this.s3 = new S3Client({
      region: opts.region,
      forcePathStyle: opts.forcePathStyle,
      ...(opts.endpoint !== undefined && { endpoint: opts.endpoint }),
    });
  }

  get where(): string {
    return `s3://${this.opts.bucket}/${this.opts.prefix}`;
  }

  private keyOf(id: string, name = ""): string {
    return `${this.opts.prefix}${id}/${name}`;
  }

  uriOf(id: string): string {
    return `s3://${this.opts.bucket}/${this.opts.prefix}${id}`;
  }

  idOf(uri: string, expectId?: string): string {
    const head = `s3://${this.opts.bucket}/${this.opts.prefix}`;
    const id = uri.startsWith(head) ? uri.slice(head.length) : "";
    if (!SNAPSHOT_ID_RE.test(id))
      throw new InvalidArgumentError(
        `archive_uri ${JSON.stringify(uri)} is not inside this host's archive (${head})`,
      );
    if (expectId !== undefined && id !== expectId)
      throw new InvalidArgumentError(
        `archive_uri ${JSON.stringify(uri)} does not hold snapshot '${expectId}'`,
      );
    return id;
  }

  async has(id: string): Promise<boolean> {
    try {
      await this.s3.send(
        new HeadObjectCommand({ Bucket: this.opts.bucket, Key: this.keyOf(id, MANIFEST_NAME) }),
      );
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async sizeOf(id: string): Promise<number> {
    return (await this.list(id)).reduce((n, o) => n + o.size, 0);
  }

  async put(id: string, srcDir: string, progress: Progress): Promise<number> {
    await this.remove(id);
    const files = await plainFiles(srcDir);
    // MANIFEST last: until it is there, this archive does not exist.
    files.sort((a, b) => Number(a.name === MANIFEST_NAME) - Number(b.name === MANIFEST_NAME));
    let total = 0;
    for (const f of files) {
      const upload = new Upload({
        client: this.s3,
        partSize: PART_BYTES,
        queueSize: 2,
        params: {
          Bucket: this.opts.bucket,
          Key: this.keyOf(id, f.name),
          Body: createReadStream(join(srcDir, f.name)).pipe(counting(progress)),
          ContentLength: f.size,
        },
      });
      await upload.done();
      total += f.size;
    }
    return total;
  }

  async get(id: string, destDir: string, progress: Progress): Promise<number> {
    const objects = await this.list(id);
    if (!objects.some((o) => o.name === MANIFEST_NAME))
      throw new Error(`archive ${this.uriOf(id)} is incomplete (no ${MANIFEST_NAME})`);
    let total = 0;
    for (const o of objects) {
      if (!SNAPSHOT_FILE_NAME_RE.test(o.name))
        throw new Error(
          `archive ${this.uriOf(id)} holds an object that is not a snapshot file: ${JSON.stringify(o.name)}`,
        );
      const res = await this.s3.send(
        new GetObjectCommand({ Bucket: this.opts.bucket, Key: this.keyOf(id, o.name) }),
      );
      if (!(res.Body instanceof Readable)) throw new Error(`S3 returned no stream for ${o.name}`);
      await writeNewFile(join(destDir, o.name), res.Body, progress);
      total += o.size;
    }
    return total;
  }

  async remove(id: string): Promise<boolean> {
    const objects = await this.list(id);
    for (let i = 0; i < objects.length; i += DELETE_BATCH) {
      const batch = objects.slice(i, i + DELETE_BATCH);
      const res = await this.s3.send(
        new DeleteObjectsCommand({
          Bucket: this.opts.bucket,
          Delete: { Objects: batch.map((o) => ({ Key: this.keyOf(id, o.name) })), Quiet: true },
        }),
      );
      if (res.Errors !== undefined && res.Errors.length > 0)
        throw new Error(
          `S3 refused to delete ${res.Errors.length} object(s) of ${this.uriOf(id)}: ${res.Errors[0]?.Message}`,
        );
    }
    return objects.length > 0;
  }

  /** The objects of archive `id`: their names under its key prefix and sizes (every page). */
  private async list(id: string): Promise<{ name: string; size: number }[]> {
    const prefix = this.keyOf(id);
    const out: { name: string; size: number }[] = [];
    let token: string | undefined;
    do {
      const res = await this.s3.send(
        new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of res.Contents ?? [])
        if (o.Key !== undefined) out.push({ name: o.Key.slice(prefix.length), size: o.Size ?? 0 });
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token !== undefined);
    return out;
  }

  close(): void {
    this.s3.destroy();
  }
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === "NotFound" || e.name === "NoSuchKey" || e.$metadata?.httpStatusCode === 404;
}
