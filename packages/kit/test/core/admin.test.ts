// The admin port next to a real API server: RED metrics change with calls and are served at /metrics; /healthz and
// /readyz behave as Kubernetes probes expect.
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Health } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { afterEach, describe, expect, it } from "vitest";
import { startAdminServer } from "../../src/admin.js";
import type { AdminServer } from "../../src/admin.js";
import { createHealth } from "../../src/health.js";
import { createMetrics } from "../../src/metrics.js";
import { grpcHealthClient, startTestServer } from "./helpers.js";
import type { TestServer } from "./helpers.js";

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

async function admin(opts: Omit<Parameters<typeof startAdminServer>[0], "port" | "host">): Promise<AdminServer & { url: string }> {
  const server = await startAdminServer({ port: 0, host: "127.0.0.1", ...opts });
  cleanup.push(() => server.close());
  return Object.assign(server, { url: `http://127.0.0.1:${server.port}` });
}

/** The value of the sample `name` whose labels equal `labels` (in any order) in Prometheus text output. */
function sampleValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)\{(.*)\} (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    const same = Object.keys(got).length === Object.keys(labels).length && Object.entries(labels).every(([k, v]) => got[k] === v);
    if (same) return Number(m[3]);
  }
  return undefined;
}

describe("/metrics", () => {
  it("serves RED metrics that change with calls, in the Prometheus text format", async () => {
    const metrics = createMetrics({ service: "kit-test" });
    const health = createHealth();
    const srv: TestServer = await startTestServer({ routes: (r) => health.routes(r), interceptors: [metrics.interceptor] });
    cleanup.push(() => srv.server.close());
    const adm = await admin({ registry: metrics.registry });

    const client = createClient(Health, createConnectTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1" }));
    await client.check({ service: "" });
    await client.check({ service: "" });
    await expect(client.check({ service: "nope" })).rejects.toMatchObject({ code: Code.NotFound });
    const grpc = grpcHealthClient(srv.port);
    await grpc.check("");
    grpc.close();

    const res = await fetch(`${adm.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await res.text();
    const labels = { service: "grpc.health.v1.Health", method: "Check", luna_service: "kit-test" };
    expect(sampleValue(text, "luna_rpc_requests_total", { ...labels, code: "ok" })).toBe(3);
    expect(sampleValue(text, "luna_rpc_requests_total", { ...labels, code: "not_found" })).toBe(1);
    expect(sampleValue(text, "luna_rpc_duration_seconds_count", labels)).toBe(4);
    expect(sampleValue(text, "luna_rpc_in_flight", labels)).toBe(0);
    expect(text).toContain("process_resident_memory_bytes");
  });
});

describe("/healthz and /readyz", () => {
  it("answers /healthz while the process runs, and 404/405 elsewhere", async () => {
    const adm = await admin({ registry: createMetrics({ service: "t", defaultMetrics: false }).registry });
    expect((await fetch(`${adm.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${adm.url}/nope`)).status).toBe(404);
    expect((await fetch(`${adm.url}/healthz`, { method: "POST" })).status).toBe(405);
  });

  it("flips /readyz with a failing check and names it", async () => {
    let dbUp = true;
    const adm = await admin({
      registry: createMetrics({ service: "t", defaultMetrics: false }).registry,
      readiness: [
        { name: "postgres", check: async () => { if (!dbUp) throw new Error("connection refused"); } },
        { name: "nats", check: async () => {} },
      ],
    });
    const ok = await fetch(`${adm.url}/readyz`);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ status: "ok", failed: [], checks: { postgres: { ok: true }, nats: { ok: true } } });

    dbUp = false;
    const down = await fetch(`${adm.url}/readyz`);
    expect(down.status).toBe(503);
    expect(await down.json()).toMatchObject({ status: "fail", failed: ["postgres"], checks: { postgres: { ok: false, error: "connection refused" }, nats: { ok: true } } });

    dbUp = true;
    expect((await fetch(`${adm.url}/readyz`)).status).toBe(200);
  });

  it("fails a check that hangs past its timeout", async () => {
    const adm = await admin({
      registry: createMetrics({ service: "t", defaultMetrics: false }).registry,
      readiness: [{ name: "redis", check: () => new Promise(() => {}) }],
      checkTimeoutMs: 50,
    });
    const res = await fetch(`${adm.url}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ failed: ["redis"], checks: { redis: { ok: false, error: "timed out after 50 ms" } } });
  });

  it("reports not ready during shutdown without running checks", async () => {
    let runs = 0;
    const adm = await admin({
      registry: createMetrics({ service: "t", defaultMetrics: false }).registry,
      readiness: [{ name: "db", check: async () => { runs++; } }],
    });
    expect((await fetch(`${adm.url}/readyz`)).status).toBe(200);
    adm.setReady(false);
    const res = await fetch(`${adm.url}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ status: "shutting_down" });
    expect(runs).toBe(1);
    expect((await fetch(`${adm.url}/healthz`)).status).toBe(200);
  });
});
