import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema, HealthListResponseSchema } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { describe, expect, it } from "vitest";
import { errorInterceptor, notFound } from "./errors.js";
import { createLogger, currentRequestId, requestLogInterceptor } from "./log.js";
import type { Logger } from "./log.js";
import { tracingInterceptor } from "./tracing.js";

type Line = Record<string, unknown>;

function setup(extra: Interceptor[] = []) {
  const lines: Line[] = [];
  const log = createLogger({ service: "test", level: "debug", destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  const routes = (router: ConnectRouter) => router.service(Health, {
    async check(req) {
      await new Promise((r) => setTimeout(r, 5));
      log.info({ seen: currentRequestId() }, "inside check");
      if (req.service === "missing") throw notFound("service missing");
      if (req.service === "boom") throw new Error("boom");
      return create(HealthCheckResponseSchema, { status: Status.SERVING });
    },
    list: () => create(HealthListResponseSchema, {}),
    async *watch() {
      log.info("stream start");
      await new Promise((r) => setTimeout(r, 5));
      yield create(HealthCheckResponseSchema, { status: Status.SERVING });
      await new Promise((r) => setTimeout(r, 5));
      log.info("stream after first message");
    },
  });
  const interceptors = [...extra, requestLogInterceptor(log), errorInterceptor(log)];
  const client = createClient(Health, createRouterTransport(routes, { router: { interceptors } }));
  return { lines, log: log as Logger, client };
}

describe("request logging", () => {
  it("tags lines inside a unary handler with the caller's x-request-id and echoes it", async () => {
    const { lines, client } = setup();
    let echoed: string | null = null;
    await client.check({}, { headers: { "x-request-id": "req-123" }, onHeader: (h) => { echoed = h.get("x-request-id"); } });
    const inside = lines.find((l) => l.msg === "inside check")!;
    expect(inside.request_id).toBe("req-123");
    expect(inside.seen).toBe("req-123");
    expect(echoed).toBe("req-123");
    const done = lines.find((l) => l.msg === "rpc done")!;
    expect(done).toMatchObject({ level: "info", rpc: "grpc.health.v1.Health/Check", code: "ok", request_id: "req-123", service: "test" });
    expect(typeof done.duration_ms).toBe("number");
  });

  it("generates a request id when none (or a malformed one) is sent", async () => {
    const { lines, client } = setup();
    await client.check({}, { headers: { "x-request-id": "bad id with spaces" } });
    const id = lines.find((l) => l.msg === "inside check")!.request_id as string;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("keeps the request id inside a streaming handler across awaits and logs the stream when it ends", async () => {
    const { lines, client } = setup();
    for await (const _ of client.watch({}, { headers: { "x-request-id": "stream-1" } })) { /* drain */ }
    expect(lines.find((l) => l.msg === "stream start")!.request_id).toBe("stream-1");
    expect(lines.find((l) => l.msg === "stream after first message")!.request_id).toBe("stream-1");
    const done = lines.filter((l) => l.msg === "rpc done");
    expect(done).toHaveLength(1);
    expect(done[0]).toMatchObject({ rpc: "grpc.health.v1.Health/Watch", code: "ok" });
  });

  it("logs caller errors at warn and server faults at error", async () => {
    const { lines, client } = setup();
    await client.check({ service: "missing" }).catch(() => undefined);
    await client.check({ service: "boom" }).catch((e: unknown) => expect(ConnectError.from(e).code).toBe(Code.Internal));
    const failed = lines.filter((l) => l.msg === "rpc failed");
    expect(failed.map((l) => [l.level, l.code])).toEqual([["warn", "not_found"], ["error", "internal"]]);
    // the real error was logged (with the request id) by the error interceptor
    const unhandled = lines.find((l) => l.msg === "unhandled error in RPC handler")!;
    expect(unhandled.request_id).toBe(failed[1]!.request_id);
  });

  it("adds trace_id/span_id continuing an incoming traceparent", async () => {
    const { lines, client } = setup([tracingInterceptor()]);
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    await client.check({}, { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } });
    const inside = lines.find((l) => l.msg === "inside check")!;
    expect(inside.trace_id).toBe(traceId);
    expect(inside.span_id).toMatch(/^[0-9a-f]{16}$/);
  });

  it("has no request fields outside an RPC", () => {
    const { lines, log } = setup();
    log.info("outside");
    expect(lines[0]!.request_id).toBeUndefined();
    expect(lines[0]!.trace_id).toBeUndefined();
  });
});
