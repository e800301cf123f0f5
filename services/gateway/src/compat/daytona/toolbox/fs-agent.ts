import { Code, ConnectError } from "@connectrpc/connect";
import type { EntryInfo } from "@dnah/proto/filesystem/filesystem_pb";
import { FileNotFoundError } from "../../../errors.js";
import { daemonError } from "../errors.js";
import type { ToolboxContext } from "./context.js";

const FS_TIMEOUT_MS = 30_000;

/**
 * The agent's filesystem.Filesystem for one sandbox, with its errors in Daytona's words:
 * NotFound → `FILE_NOT_FOUND` (404), PermissionDenied → `FILE_ACCESS_DENIED` (403); transport
 * failures as the agent pool translates them.
 */
export class SandboxFs {
  constructor(
    private readonly ctx: ToolboxContext,
    readonly sandboxId: string,
  ) {}

  async stat(path: string): Promise<EntryInfo> {
    const fs = await this.fs();
    const res = await this.call(path, () => fs.stat({ path }, { timeoutMs: FS_TIMEOUT_MS }));
    if (res.entry === undefined) throw new Error("agent answered Stat without an entry");
    return res.entry;
  }

  /** The entry, or undefined when nothing is at `path`. */
  async statOrUndefined(path: string): Promise<EntryInfo | undefined> {
    try {
      return await this.stat(path);
    } catch (err) {
      if (err instanceof Error && "code" in err && err.code === "FILE_NOT_FOUND") return undefined;
      throw err;
    }
  }

  async list(path: string, depth: number): Promise<EntryInfo[]> {
    const fs = await this.fs();
    return (await this.call(path, () => fs.listDir({ path, depth }, { timeoutMs: FS_TIMEOUT_MS }))).entries;
  }

  async move(source: string, destination: string): Promise<void> {
    const fs = await this.fs();
    await this.call(source, () => fs.move({ source, destination }, { timeoutMs: FS_TIMEOUT_MS }));
  }

  async remove(path: string): Promise<void> {
    const fs = await this.fs();
    await this.call(path, () => fs.remove({ path }, { timeoutMs: FS_TIMEOUT_MS }));
  }

  private async fs() {
    return (await this.ctx.deps.agents.connect(this.sandboxId)).filesystem;
  }

  private async call<T>(path: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw fsError(this.ctx, this.sandboxId, path, err);
    }
  }
}

/** An agent failure on `path` in Daytona's terms. */
export function fsError(ctx: ToolboxContext, sandboxId: string, path: string, err: unknown): unknown {
  if (err instanceof ConnectError) {
    if (err.code === Code.NotFound)
      return daemonError("FILE_NOT_FOUND", `file not found: ${path}`, { cause: err });
    if (err.code === Code.PermissionDenied)
      return daemonError("FILE_ACCESS_DENIED", `permission denied: ${path}`, { cause: err });
  }
  if (err instanceof FileNotFoundError)
    return daemonError("FILE_NOT_FOUND", `file not found: ${path}`, { cause: err });
  return ctx.deps.agents.translate(sandboxId, err);
}
