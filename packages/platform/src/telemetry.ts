import type { Interceptor } from "@connectrpc/connect";
import {
  type Context,
  context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import type { Env } from "./config.js";

const tracer = () => trace.getTracer("dnah");

export interface Telemetry {
  /** True when spans are exported (OTEL_EXPORTER_OTLP_ENDPOINT is set). */
  readonly exporting: boolean;
  shutdown(): Promise<void>;
}

/**
 * Installs the tracer provider and the W3C propagator. Context always propagates (so a
 * collector added later sees whole traces); spans are exported only when
 * `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
 */
export function initTelemetry(
  serviceName: string,
  env: Env,
  extraProcessors: SpanProcessor[] = [],
): Telemetry {
  const endpoint = env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ "service.name": serviceName }),
    spanProcessors: [
      ...(endpoint
        ? [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${endpoint.replace(/\/$/, "")}/v1/traces` }))]
        : []),
      ...extraProcessors,
    ],
  });
  provider.register();
  return { exporting: Boolean(endpoint), shutdown: () => provider.shutdown() };
}

/** Runs `fn` inside a new span (a child of `parent`), recording a thrown error on it. */
async function inSpan<T>(
  name: string,
  kind: SpanKind,
  parent: Context,
  fn: (ctx: Context) => Promise<T>,
): Promise<T> {
  const span = tracer().startSpan(name, { kind }, parent);
  const ctx = trace.setSpan(parent, span);
  try {
    return await context.with(ctx, () => fn(ctx));
  } catch (err) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
    throw err;
  } finally {
    span.end();
  }
}

const spanName = (req: { method: { name: string; parent: { typeName: string } } }) =>
  `${req.method.parent.typeName}/${req.method.name}`;

/** Client side: a span per outgoing RPC and its `traceparent` in the request headers. */
export const clientTracing: Interceptor = (next) => (req) =>
  inSpan(spanName(req), SpanKind.CLIENT, context.active(), (ctx) => {
    propagation.inject(ctx, req.header, { set: (carrier: Headers, key, value) => carrier.set(key, value) });
    return next(req);
  });

/** Server side: continues the caller's trace from `traceparent` and runs the handler in it. */
export const serverTracing: Interceptor = (next) => (req) => {
  const parent = propagation.extract(context.active(), req.header, {
    get: (carrier: Headers, key) => carrier.get(key) ?? undefined,
    keys: (carrier: Headers) => [...carrier.keys()],
  });
  return inSpan(spanName(req), SpanKind.SERVER, parent, () => next(req));
};

/** Copies the active trace context into plain HTTP headers (for the tunnel and REST hops). */
export function injectTraceHeaders(headers: Record<string, string>): Record<string, string> {
  propagation.inject(context.active(), headers, defaultTextMapSetter);
  return headers;
}

/** Runs fn in the trace context carried by incoming HTTP headers. */
export function withIncomingTrace<T>(headers: Record<string, string | string[] | undefined>, fn: () => T): T {
  const carrier: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (typeof v === "string") carrier[k] = v;
  return context.with(propagation.extract(context.active(), carrier, defaultTextMapGetter), fn);
}
