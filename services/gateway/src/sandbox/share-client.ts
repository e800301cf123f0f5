import { type IncomingMessage, request } from "node:http";
import type { Readable } from "node:stream";
import type { Client } from "@connectrpc/connect";
import { SandboxState, type SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import {
  FailedPreconditionError,
  FileNotFoundError,
  GatewayError,
  InvalidArgumentError,
  PayloadTooLargeError,
  SandboxNotFoundError,
  UnavailableError,
} from "../errors.js";
import { readBody } from "./agent-client.js";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "./scheduler.js";

/** Where every sandbox's share is mounted inside it. */
export const SHARE_MOUNT = "/mnt/dnah-share";
const ERROR_BODY_MAX_BYTES = 64 * 1024;
/** One server-sent event from the vmm may be at most this long. */
const MAX_EVENT_BYTES = 64 * 1024;

/** The part of a normalised absolute guest path below the share (`""` for the mount itself), or undefined. */
export function shareRelative(absPath: string): string | undefined {
  if (absPath === SHARE_MOUNT) return "";
  return absPath.startsWith(`${SHARE_MOUNT}/`) ? absPath.slice(SHARE_MOUNT.length + 1) : undefined;
}

/** A sandbox's share on its host: reachable while it runs or is paused. */
export interface ShareHost {
  sandboxId: string;
  vmmUrl: string;
  paused: boolean;
  /** Signs one call to the vmm (a fresh control-plane token). */
  authorization: () => string;
}

/** Finds the vmm holding a sandbox's share; typed errors for unknown, deleted or unreachable states. */
export async function shareHost(
  deps: {
    scheduler: Pick<Client<typeof SchedulerService>, "getSandbox">;
    vmmAuthorization: (vmmUrl: string) => string;
  },
  sandboxId: string,
): Promise<ShareHost> {
  const { scheduler } = deps;
  let record: Awaited<ReturnType<Client<typeof SchedulerService>["getSandbox"]>>["sandbox"];
  try {
    record = (await scheduler.getSandbox({ sandboxId }, { timeoutMs: SCHEDULER_TIMEOUT_MS })).sandbox;
  } catch (err) {
    throw fromScheduler(err, (cause) => new SandboxNotFoundError(sandboxId, { cause }));
  }
  if (record === undefined || record.state === SandboxState.DELETED)
    throw new SandboxNotFoundError(sandboxId);
  if (record.state !== SandboxState.RUNNING && record.state !== SandboxState.PAUSED)
    throw new FailedPreconditionError(
      `sandbox '${sandboxId}' is ${SandboxState[record.state]?.toLowerCase()}; its share is reachable while it runs or is paused`,
    );
  if (record.vmmUrl === "") throw new UnavailableError("sandbox has no host yet; retry");
  const vmmUrl = record.vmmUrl;
  return {
    sandboxId,
    vmmUrl,
    paused: record.state === SandboxState.PAUSED,
    authorization: () => deps.vmmAuthorization(vmmUrl),
  };
}

function shareUrl(host: ShareHost, rel: string, query = ""): string {
  const segs = rel.split("/").filter((s) => s !== "");
  // The vmm refuses these too; URL parsing would fold them before it saw them.
  if (segs.some((s) => s === "." || s === "..")) throw new InvalidArgumentError("path must not contain '..'");
  if (segs.length === 0) throw new InvalidArgumentError("path names the share itself, not a file");
  return `${host.vmmUrl}/share/${encodeURIComponent(host.sandboxId)}/${segs.map(encodeURIComponent).join("/")}${query}`;
}

function call(
  url: string,
  method: "GET" | "PUT",
  headers: Record<string, string>,
  body: Readable | undefined,
  signal: AbortSignal | undefined,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, ...(signal !== undefined ? { signal } : {}) });
    req.on("response", resolve);
    req.on("error", (err) =>
      reject(new UnavailableError("the sandbox's host did not answer", { cause: err })),
    );
    if (body === undefined) req.end();
    else {
      body.on("error", (err) => req.destroy(err));
      body.pipe(req);
    }
  });
}

/** The vmm's share error `{code, message}` as a gateway error. */
async function shareError(res: IncomingMessage, path: string): Promise<Error> {
  const text = (await readBody(res, ERROR_BODY_MAX_BYTES)).toString("utf8");
  let message = "";
  try {
    const m = (JSON.parse(text) as { message?: unknown }).message;
    if (typeof m === "string") message = m;
  } catch {
    message = text.slice(0, 200);
  }
  switch (res.statusCode) {
    case 404:
      return message.startsWith("no sandbox") ? new UnavailableError(message) : new FileNotFoundError(path);
    case 400:
    case 403:
    case 416:
      return new InvalidArgumentError(message || `cannot use path '${path}'`);
    case 413:
      return new PayloadTooLargeError(message);
    case 507:
      return new GatewayError("resource_exhausted", message || "the share is full");
    default:
      return new Error(`vmm answered a share call with HTTP ${res.statusCode}: ${message}`);
  }
}

/** A file of the share as a stream (status 200: `content-length` is set), else a typed error. */
export async function readShareFile(
  host: ShareHost,
  rel: string,
  signal?: AbortSignal,
): Promise<IncomingMessage> {
  const res = await call(
    shareUrl(host, rel),
    "GET",
    { authorization: host.authorization() },
    undefined,
    signal,
  );
  if (res.statusCode === 200) return res;
  throw await shareError(res, `${SHARE_MOUNT}/${rel}`);
}

/**
 * Streams `body` into a file of the share (parents created, nothing visible until complete,
 * owned by the sandbox user); works while the sandbox is paused.
 */
export async function writeShareFile(
  host: ShareHost,
  rel: string,
  body: Readable,
  opts: { signal?: AbortSignal | undefined; contentLength?: number | undefined } = {},
): Promise<{ path: string; sizeBytes: number; sha256?: string }> {
  const headers: Record<string, string> = {
    "content-type": "application/octet-stream",
    authorization: host.authorization(),
  };
  if (opts.contentLength !== undefined) headers["content-length"] = String(opts.contentLength);
  const res = await call(shareUrl(host, rel), "PUT", headers, body, opts.signal);
  if (res.statusCode !== 200) throw await shareError(res, `${SHARE_MOUNT}/${rel}`);
  return JSON.parse((await readBody(res, ERROR_BODY_MAX_BYTES)).toString("utf8")) as {
    path: string;
    sizeBytes: number;
    sha256?: string;
  };
}

export type ShareEventType = "create" | "write" | "remove" | "rename" | "chmod";

/** One change in the share; `path` is share-relative with a leading '/'. */
export interface ShareEvent {
  type: ShareEventType;
  path: string;
  at: number;
}

/**
 * Opens the vmm's watch of a share folder (`GET /share-watch/<id>`); resolves once the vmm
 * watches, then yields its events until the vmm ends the stream (sandbox gone) or `signal`
 * aborts. Refusals come as typed errors.
 */
export async function watchShare(
  host: ShareHost,
  rel: string,
  recursive: boolean,
  signal: AbortSignal,
): Promise<AsyncIterable<ShareEvent>> {
  const qs = new URLSearchParams({ path: rel, recursive: String(recursive) });
  const res = await call(
    `${host.vmmUrl}/share-watch/${encodeURIComponent(host.sandboxId)}?${qs.toString()}`,
    "GET",
    { accept: "text/event-stream", authorization: host.authorization() },
    undefined,
    signal,
  );
  if (res.statusCode !== 200) throw await shareError(res, `${SHARE_MOUNT}/${rel}`);
  const events = parseEvents(res);
  // The vmm's first event says it watches; only then is the watch "started".
  const first = await events.next();
  if (first.done || first.value.event !== "start") {
    res.destroy();
    throw new UnavailableError("the sandbox's host stopped the watch before it started");
  }
  return (async function* () {
    try {
      for await (const e of events) {
        if (e.event === "end") return;
        if (e.event !== "message") continue;
        const ev = JSON.parse(e.data) as ShareEvent;
        if (typeof ev?.path === "string" && typeof ev.type === "string") yield ev;
      }
    } finally {
      res.destroy();
    }
  })();
}

/** Server-sent events (name and data; comments skipped) of a response body. */
async function* parseEvents(res: IncomingMessage): AsyncGenerator<{ event: string; data: string }> {
  let buf = "";
  res.setEncoding("utf8");
  for await (const chunk of res as AsyncIterable<string>) {
    buf += chunk;
    let at = buf.indexOf("\n\n");
    while (at !== -1) {
      const block = buf.slice(0, at);
      buf = buf.slice(at + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length > 0 || event !== "message") yield { event, data: data.join("\n") };
      at = buf.indexOf("\n\n");
    }
    if (buf.length > MAX_EVENT_BYTES) throw new Error("the vmm sent an oversized event");
  }
}
