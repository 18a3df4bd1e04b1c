import { create } from "@bufbuild/protobuf";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema, HealthListResponseSchema } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { context, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { tracing } from "@opentelemetry/sdk-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { errorInterceptor, notFound } from "./errors.js";
import { createLogger } from "./log.js";
import {
  extractTraceContext, injectTraceHeaders, startTracing, traceContextClientInterceptor, tracingInterceptor, tracingRequested,
} from "./tracing.js";

describe("tracingRequested", () => {
  it("is off without OTEL variables and on with an OTLP endpoint or exporter", () => {
    expect(tracingRequested({})).toBe(false);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" })).toBe(true);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/v1/traces" })).toBe(true);
    expect(tracingRequested({ OTEL_TRACES_EXPORTER: "console" })).toBe(true);
    expect(tracingRequested({ OTEL_TRACES_EXPORTER: "none" })).toBe(false);
    expect(tracingRequested({ OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" })).toBe(false);
  });
  it("lets OTEL_SDK_DISABLED=true win", () => {
    expect(tracingRequested({ OTEL_SDK_DISABLED: "true", OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" })).toBe(false);
    expect(tracingRequested({ OTEL_SDK_DISABLED: "false", OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" })).toBe(true);
  });
  it("startTracing is a no-op when not requested", async () => {
    const t = await startTracing("test");
    expect(t.enabled).toBe(false);
    await t.shutdown();
  });
});

describe("W3C propagation helpers", () => {
  it("round-trips a trace context through headers", () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const incoming = new Map([["traceparent", `00-${traceId}-b7ad6b7169203331-01`]]);
    const ctx = extractTraceContext((k) => incoming.get(k));
    expect(trace.getSpanContext(ctx)?.traceId).toBe(traceId);
    const out = new Map<string, string>();
    injectTraceHeaders({ set: (k, v) => void out.set(k, v) }, ctx);
    expect(out.get("traceparent")).toBe(`00-${traceId}-b7ad6b7169203331-01`);
  });
  it("injects nothing without an active span", () => {
    const out = new Map<string, string>();
    injectTraceHeaders({ set: (k, v) => void out.set(k, v) }, context.active());
    expect(out.size).toBe(0);
  });
});

describe("traceContextClientInterceptor", () => {
  it("sends the caller's active trace context to the callee", async () => {
    let seen: string | null = null;
    const routes = (router: ConnectRouter) => router.service(Health, {
      check(_req, ctx) {
        seen = ctx.requestHeader.get("traceparent");
        return create(HealthCheckResponseSchema, { status: Status.SERVING });
      },
      list: () => create(HealthListResponseSchema, {}),
      async *watch() { /* unused */ },
    });
    const client = createClient(Health, createRouterTransport(routes, { transport: { interceptors: [traceContextClientInterceptor()] } }));
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const ctx = extractTraceContext((k) => (k === "traceparent" ? traceparent : undefined));
    await context.with(ctx, () => client.check({}));
    expect(seen).toBe(traceparent);
  });
});

describe("tracingInterceptor with an SDK", () => {
  const exporter = new tracing.InMemorySpanExporter();
  const provider = new tracing.BasicTracerProvider({ spanProcessors: [new tracing.SimpleSpanProcessor(exporter)] });
  beforeAll(() => {
    trace.setGlobalTracerProvider(provider);
  });
  afterAll(async () => {
    await provider.shutdown();
    trace.disable();
  });

  const log = createLogger({ service: "test", level: "silent" });
  const routes = (router: ConnectRouter) => router.service(Health, {
    check(req) {
      if (req.service === "missing") throw notFound("missing");
      if (req.service === "boom") throw new Error("boom");
      return create(HealthCheckResponseSchema, { status: Status.SERVING });
    },
    list: () => create(HealthListResponseSchema, {}),
    async *watch() {
      yield create(HealthCheckResponseSchema, { status: Status.SERVING });
      await new Promise((r) => setTimeout(r, 20));
      yield create(HealthCheckResponseSchema, { status: Status.NOT_SERVING });
    },
  });
  const client = createClient(Health, createRouterTransport(routes, {
    router: { interceptors: [tracingInterceptor(), errorInterceptor(log)] },
  }));

  it("records a SERVER span that continues the incoming traceparent", async () => {
    exporter.reset();
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    await client.check({}, { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } });
    const [span] = exporter.getFinishedSpans();
    expect(span).toBeDefined();
    expect(span!.name).toBe("grpc.health.v1.Health/Check");
    expect(span!.kind).toBe(SpanKind.SERVER);
    expect(span!.spanContext().traceId).toBe(traceId);
    expect(span!.parentSpanContext?.spanId).toBe("00f067aa0ba902b7");
    expect(span!.attributes["rpc.connect_rpc.error_code"]).toBe("ok");
  });

  it("marks server faults as span errors but not caller errors", async () => {
    exporter.reset();
    await client.check({ service: "missing" }).catch(() => undefined);
    await client.check({ service: "boom" }).catch(() => undefined);
    const [notFoundSpan, internalSpan] = exporter.getFinishedSpans();
    expect(notFoundSpan!.status.code).toBe(SpanStatusCode.UNSET);
    expect(notFoundSpan!.attributes["rpc.connect_rpc.error_code"]).toBe("not_found");
    expect(internalSpan!.status.code).toBe(SpanStatusCode.ERROR);
    expect(internalSpan!.attributes["rpc.connect_rpc.error_code"]).toBe("internal");
  });

  it("ends a stream's span only when the stream ends", async () => {
    exporter.reset();
    const it = client.watch({})[Symbol.asyncIterator]();
    await it.next();
    expect(exporter.getFinishedSpans()).toHaveLength(0);
    while (!(await it.next()).done) { /* drain */ }
    await new Promise((r) => setTimeout(r, 5));
    expect(exporter.getFinishedSpans().map((s) => s.name)).toEqual(["grpc.health.v1.Health/Watch"]);
  });
});
