import { timestampMs } from "@bufbuild/protobuf/wkt";
import { type EntryInfo, FileType } from "@dnah/proto/filesystem/filesystem_pb";

/** Daytona's FileInfo, as `GET /files` and `GET /files/info` return it. */
export interface FileInfo {
  name: string;
  path: string;
  size: number;
  /** Go `FileMode.String()`: `-rw-r--r--`, `drwxr-xr-x`. */
  mode: string;
  /** Octal permission bits: `0644`. */
  permissions: string;
  isDir: boolean;
  owner: string;
  group: string;
  /** Go's `time.Time.String()` in UTC. */
  modTime: string;
  modifiedAt: string;
}

/** The agent's envd EntryInfo in Daytona's shape. */
export function toFileInfo(e: EntryInfo): FileInfo {
  const ms = e.modifiedTime === undefined ? 0 : timestampMs(e.modifiedTime);
  const nanos = e.modifiedTime?.nanos ?? 0;
  return {
    name: e.name,
    path: e.path,
    size: Number(e.size < 0n ? 0n : e.size),
    mode: e.permissions,
    permissions: (e.mode & 0o7777).toString(8).padStart(4, "0"),
    isDir: e.type === FileType.DIRECTORY,
    owner: e.owner,
    group: e.group,
    modTime: goTime(ms, nanos),
    modifiedAt: new Date(ms).toISOString(),
  };
}

/** `2026-12-02 17:04:46.123456789 +0000 UTC` (Go's default time format; trailing zeros dropped). */
export function goTime(ms: number, nanos: number): string {
  const iso = new Date(ms).toISOString(); // 2026-12-02T17:04:46.123Z
  const frac = nanos === 0 ? "" : `.${String(nanos).padStart(9, "0").replace(/0+$/, "")}`;
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}${frac} +0000 UTC`;
}
