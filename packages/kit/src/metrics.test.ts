import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema, HealthListResponseSchema } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { describe, expect, it } from "vitest";
import { errorInterceptor, notFound } from "./errors.js";
import { createLogger } from "./log.js";
import { createMetrics } from "./metrics.js";
import type { Metrics } from "./metrics.js";

async function value(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const metric = await metrics.registry.getSingleMetric(name)!.get();
  const match = metric.values.find((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)
    && (!name.endsWith("_seconds") || (v as { metricName?: string }).metricName === `${name}_count`));
  return match?.value ?? 0;
}

function setup() {
  const metrics = createMetrics({ service: "test", defaultMetrics: false });
  let releaseStream!: () => void;
  const released = new Promise<void>((resolve) => {
    releaseStream = resolve;
  });
  const routes = (router: ConnectRouter) => router.service(Health, {
    check(req) {
      if (req.service === "missing") throw notFound("missing");
      if (req.service === "boom") throw new Error("boom");
      return create(HealthCheckResponseSchema, { status: Status.SERVING });
    },
    list: () => create(HealthListResponseSchema, {}),
    async *watch(req, ctx) {
      yield create(HealthCheckResponseSchema, { status: Status.SERVING });
      await Promise.race([released, new Promise((resolve) => ctx.signal.addEventListener("abort", resolve))]);
      if (req.service === "fail") throw new ConnectError("upstream gone", Code.Unavailable);
      yield create(HealthCheckResponseSchema, { status: Status.NOT_SERVING });
    },
  });
  const log = createLogger({ service: "test", level: "silent" });
  const client = createClient(Health, createRouterTransport(routes, {
    router: { interceptors: [metrics.interceptor, errorInterceptor(log)] },
  }));
  return { metrics, client, release: releaseStream };
}

const check = { service: "grpc.health.v1.Health", method: "Check" };
const watch = { service: "grpc.health.v1.Health", method: "Watch" };

describe("RED metrics interceptor", () => {
  it("counts unary calls by final code and observes their duration", async () => {
    const { metrics, client } = setup();
    await client.check({});
    await client.check({});
    await client.check({ service: "missing" }).catch(() => undefined);
    await client.check({ service: "boom" }).catch(() => undefined);
    expect(await value(metrics, "luna_rpc_requests_total", { ...check, code: "ok" })).toBe(2);
    expect(await value(metrics, "luna_rpc_requests_total", { ...check, code: "not_found" })).toBe(1);
    // an unknown error is counted as what the client sees: internal
    expect(await value(metrics, "luna_rpc_requests_total", { ...check, code: "internal" })).toBe(1);
    expect(await value(metrics, "luna_rpc_duration_seconds", check)).toBe(4);
    expect(await value(metrics, "luna_rpc_in_flight", check)).toBe(0);
  });

  it("keeps a stream in flight until it ends, then counts it once with its final code", async () => {
    const { metrics, client, release } = setup();
    const it = client.watch({})[Symbol.asyncIterator]();
    await it.next();
    expect(await value(metrics, "luna_rpc_in_flight", watch)).toBe(1);
    expect(await value(metrics, "luna_rpc_requests_total", { ...watch, code: "ok" })).toBe(0);
    release();
    while (!(await it.next()).done) { /* drain */ }
    expect(await value(metrics, "luna_rpc_in_flight", watch)).toBe(0);
    expect(await value(metrics, "luna_rpc_requests_total", { ...watch, code: "ok" })).toBe(1);
    expect(await value(metrics, "luna_rpc_duration_seconds", watch)).toBe(1);
  });

  it("counts a stream that fails mid-way with the failure code", async () => {
    const { metrics, client, release } = setup();
    const it = client.watch({ service: "fail" })[Symbol.asyncIterator]();
    await it.next();
    release();
    await expect(it.next()).rejects.toMatchObject({ code: Code.Unavailable });
    expect(await value(metrics, "luna_rpc_requests_total", { ...watch, code: "unavailable" })).toBe(1);
    expect(await value(metrics, "luna_rpc_in_flight", watch)).toBe(0);
  });

  it("counts a stream the client cancels as canceled", async () => {
    const { metrics, client } = setup();
    const abort = new AbortController();
    const it = client.watch({}, { signal: abort.signal })[Symbol.asyncIterator]();
    await it.next();
    abort.abort();
    await it.next().catch(() => undefined);
    await new Promise((r) => setTimeout(r, 10));
    expect(await value(metrics, "luna_rpc_requests_total", { ...watch, code: "canceled" })).toBe(1);
    expect(await value(metrics, "luna_rpc_in_flight", watch)).toBe(0);
  });

  it("labels every series with the Luna service and can collect default process metrics", async () => {
    const metrics = createMetrics({ service: "billing" });
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/process_cpu_user_seconds_total\{luna_service="billing"\}/);
    expect(text).toContain("# TYPE luna_rpc_duration_seconds histogram");
  });
});
