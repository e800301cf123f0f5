/**
 * Where archived snapshots are kept. A backend stores the plain files of a snapshot folder
 * under the snapshot's id, whole or not at all (a reader never sees half an archive), and
 * addresses it by a URI. Locking, the local folder and the protocol around it are
 * `ArchiveStore`'s (../archive.ts).
 */
export interface ArchiveBackend {
  /** For messages and logs: the folder, or `s3://bucket/prefix`. Never a credential. */
  readonly where: string;
  uriOf(id: string): string;
  /**
   * The snapshot id a URI names, refusing (InvalidArgumentError) any URI that is not one of
   * this backend's archives (named `expectId` when given).
   */
  idOf(uri: string, expectId?: string): string;
  /** True when a complete archive of `id` is stored. */
  has(id: string): Promise<boolean>;
  /** Bytes stored for `id` (a complete archive). */
  sizeOf(id: string): Promise<number>;
  /** Stores the plain files of `srcDir` as `id`, replacing any incomplete earlier try. */
  put(id: string, srcDir: string, progress: Progress): Promise<number>;
  /** Writes the files of archive `id` into `destDir` (exists, empty); the bytes written. */
  get(id: string, destDir: string, progress: Progress): Promise<number>;
  /** Removes archive `id` and any incomplete try of it; true when there was one. */
  remove(id: string): Promise<boolean>;
}

/** Called with every chunk's size as it is moved (for progress logs). */
export type Progress = (bytes: number) => void;
