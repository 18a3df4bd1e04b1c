// Starts the real OpenTelemetry SDK (global state), so it lives in its own file (vitest runs files in separate forks).
import http from "node:http";
import type { AddressInfo } from "node:net";
import { trace } from "@opentelemetry/api";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startTracing } from "../../src/tracing.js";

const received: string[] = [];
const collector = http.createServer((req, res) => {
  received.push(`${req.method} ${req.url}`);
  req.resume();
  req.on("end", () => res.writeHead(200, { "content-type": "application/x-protobuf" }).end());
});

beforeAll(async () => {
  await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => collector.close(() => resolve())));

it("exports spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, and only spans", async () => {
  const tracing = await startTracing("kit-test");
  expect(tracing.enabled).toBe(true);
  const span = trace.getTracer("test").startSpan("work");
  expect(span.isRecording()).toBe(true);
  span.end();
  await tracing.shutdown(); // flushes the batch processor
  expect(received).toContain("POST /v1/traces");
  expect(received.filter((r) => !r.endsWith("/v1/traces"))).toEqual([]);
});
