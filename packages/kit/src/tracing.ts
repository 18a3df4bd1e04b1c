// OpenTelemetry traces, configured only by the standard OTEL_* environment variables. Without them everything here is
// a cheap no-op, but trace context still flows: an incoming traceparent is continued (log lines carry its trace_id)
// and propagated to NATS headers and outgoing calls.
import type { Interceptor } from "@connectrpc/connect";
import { context, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Context, TextMapGetter } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { codeName, codeOf, interceptCall, isServerFault } from "./errors.js";

const w3c = new W3CTraceContextPropagator();
const TRACER_NAME = "@luna/kit";
let contextManagerInstalled = false;
let ownContextManager: AsyncLocalStorageContextManager | undefined;

/**
 * Installs an AsyncLocalStorage context manager unless one is registered already, so the active span follows async
 * calls even when the SDK is off (log lines need it for trace_id). Idempotent.
 */
export function ensureContextManager(): void {
  if (contextManagerInstalled) return;
  contextManagerInstalled = true;
  const manager = new AsyncLocalStorageContextManager().enable();
  if (context.setGlobalContextManager(manager)) ownContextManager = manager;
  else manager.disable();
}

/**
 * Whether the environment asks for trace export: `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
 * or an `OTEL_TRACES_EXPORTER` other than "none"; `OTEL_SDK_DISABLED=true` always wins.
 */
export function tracingRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  if ((env.OTEL_SDK_DISABLED ?? "").trim().toLowerCase() === "true") return false;
  const exporters = (env.OTEL_TRACES_EXPORTER ?? "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
  if (exporters.length > 0) return !exporters.every((e) => e === "none");
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim());
}

/** Handle returned by {@link startTracing}; `shutdown()` flushes pending spans. */
export type Tracing = { enabled: boolean; shutdown(): Promise<void> };

/**
 * Starts the OpenTelemetry Node SDK for traces when {@link tracingRequested}, else returns a no-op. Call it first in
 * `main.ts`. Only traces are exported unless `OTEL_METRICS_EXPORTER` / `OTEL_LOGS_EXPORTER` are set explicitly
 * (metrics are prom-client on the admin port, logs are stdout JSON).
 */
export async function startTracing(serviceName: string): Promise<Tracing> {
  // The SDK reads process.env itself, so the decision must be made on process.env too.
  const env = process.env;
  if (!tracingRequested(env)) {
    ensureContextManager();
    return { enabled: false, shutdown: async () => {} };
  }
  // The SDK registers its own context manager; give the slot back if we took it.
  if (ownContextManager) {
    context.disable();
    ownContextManager = undefined;
  }
  contextManagerInstalled = true;
  // Loaded lazily: the SDK and its exporters are heavy and unused when tracing is off.
  const { NodeSDK } = await import("@opentelemetry/sdk-node");
  const sdk = new NodeSDK({
    serviceName: env.OTEL_SERVICE_NAME ?? serviceName,
    ...(env.OTEL_METRICS_EXPORTER ? {} : { metricReaders: [] }),
    ...(env.OTEL_LOGS_EXPORTER ? {} : { logRecordProcessors: [] }),
  });
  sdk.start();
  return { enabled: true, shutdown: () => sdk.shutdown() };
}

/** Writes the W3C `traceparent`/`tracestate` of the active span (or of `ctx`) into message or request headers. */
export function injectTraceHeaders(headers: { set(key: string, value: string): void }, ctx: Context = context.active()): void {
  w3c.inject(ctx, headers, { set: (carrier, key, value) => carrier.set(key, value) });
}

/** Reads W3C trace context from headers; run work under the result with `context.with(ctx, fn)`. */
export function extractTraceContext(get: (key: string) => string | undefined, base: Context = context.active()): Context {
  const getter: TextMapGetter<undefined> = { get: (_carrier, key) => get(key), keys: () => [] };
  return w3c.extract(base, undefined, getter);
}

/**
 * Client interceptor for Connect transports between services: sends the active trace context (`traceparent`) so the
 * callee's server span joins the caller's trace.
 */
export function traceContextClientInterceptor(): Interceptor {
  return (next) => (req) => {
    injectTraceHeaders(req.header);
    return next(req);
  };
}

/**
 * Starts a SERVER span per RPC (`<package.Service>/<Method>`) as a child of the incoming `traceparent`, keeps it
 * active inside the handler (also while a stream is produced), and ends it with the call's final code.
 */
export function tracingInterceptor(): Interceptor {
  ensureContextManager();
  const tracer = trace.getTracer(TRACER_NAME);
  return (next) => async (req) => {
    const parent = extractTraceContext((key) => req.header.get(key) ?? undefined);
    const span = tracer.startSpan(`${req.service.typeName}/${req.method.name}`, {
      kind: SpanKind.SERVER,
      attributes: { "rpc.system": "connect_rpc", "rpc.service": req.service.typeName, "rpc.method": req.method.name },
    }, parent);
    const active = trace.setSpan(parent, span);
    return interceptCall(next, req, {
      run: (fn) => context.with(active, fn),
      end: (err) => {
        if (err === undefined) {
          span.setAttribute("rpc.connect_rpc.error_code", "ok");
        } else {
          const code = codeOf(err);
          span.setAttribute("rpc.connect_rpc.error_code", codeName(code));
          // Caller errors (not found, invalid argument) are not span errors, as for gRPC servers in OTel semconv.
          if (isServerFault(code)) span.setStatus({ code: SpanStatusCode.ERROR, message: codeName(code) });
        }
        span.end();
      },
    });
  };
}
