/** A dnah REST error (or an unreachable gateway), shown to the model as the tool's error text. */
export class DnahApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "DnahApiError";
  }
}

export interface DnahClientOptions {
  /** Where the REST API is called (`http://127.0.0.1:3000`). */
  baseUrl: string;
  apiKey: string;
}

/**
 * The thin REST client the tools use: `/v1/...` (and, for port URLs, Daytona's preview-link
 * route). Every non-2xx answer becomes a DnahApiError carrying the gateway's own message.
 */
export class DnahClient {
  readonly baseUrl: string;
  readonly #apiKey: string;

  constructor(opts: DnahClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
    this.#apiKey = opts.apiKey;
  }

  /** The credentials every call sends (a WebSocket upgrade sends them too). */
  authHeaders(): Record<string, string> {
    return { authorization: `Bearer ${this.#apiKey}` };
  }

  /** The `ws://` / `wss://` URL of a route of the gateway. */
  wsUrl(path: string): string {
    return this.baseUrl.replace(/^http/, "ws") + path;
  }

  /** A request whose 2xx answer is returned as is (the caller reads the body). */
  async request(
    method: string,
    path: string,
    init: {
      json?: unknown;
      /** Raw bytes; a stream is sent as it is read (chunked), never held whole. */
      body?: Uint8Array | ReadableStream<Uint8Array>;
      /** Extra request headers (`content-length`, checksums…). */
      headers?: Record<string, string>;
      signal?: AbortSignal | undefined;
    } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers, ...this.authHeaders() };
    let body: string | Uint8Array | ReadableStream<Uint8Array> | undefined;
    if (init.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(init.json);
    } else if (init.body !== undefined) {
      headers["content-type"] = "application/octet-stream";
      body = init.body;
    }
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        headers,
        ...(body !== undefined ? { body } : {}),
        // fetch sends a stream body only when told it is half-duplex (undici's rule).
        ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
        ...(init.signal !== undefined ? { signal: init.signal } : {}),
      } as RequestInit);
    } catch (err) {
      if (init.signal?.aborted) throw new DnahApiError(499, "canceled", "the call was canceled");
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new DnahApiError(
        503,
        "unavailable",
        `cannot reach dnah at ${this.baseUrl}: ${cause?.code ?? cause?.message ?? (err as Error).message}`,
      );
    }
    if (res.ok) return res;
    const text = await res.text().catch(() => "");
    let code = `http_${res.status}`;
    let message = text.slice(0, 500) || res.statusText;
    try {
      const b = JSON.parse(text) as { code?: unknown; message?: unknown; error?: unknown };
      if (typeof b.code === "string") code = b.code;
      if (typeof b.message === "string") message = b.message;
    } catch {
      // Not JSON: the text itself (bounded) is the message.
    }
    throw new DnahApiError(res.status, code, message);
  }

  /** A JSON call; 204 answers undefined. */
  async json<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    signal?: AbortSignal,
  ): Promise<T> {
    const res = await this.request(method, path, {
      ...(body !== undefined ? { json: body } : {}),
      signal,
    });
    if (res.status === 204) return undefined as T;
    return (await res.json()) as T;
  }
}

/** Reads at most `limit` bytes of a body; undefined when it is longer (the rest is not read). */
export async function readBounded(res: Response, limit: number): Promise<Uint8Array | undefined> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = res.body?.getReader();
  if (reader === undefined) return new Uint8Array();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      return undefined;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}
