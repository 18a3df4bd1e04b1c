// grpc.health.v1 on a real server, as Kubernetes `grpc:` probes and grpc-health-probe (grpc-go) and Connect clients see it.
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { afterEach, describe, expect, it } from "vitest";
import { createHealth } from "../../src/health.js";
import type { HealthServer } from "../../src/health.js";
import { grpcHealthClient, startTestServer, until } from "./helpers.js";
import type { TestServer } from "./helpers.js";

let current: TestServer | undefined;
afterEach(async () => {
  await current?.server.close();
  current = undefined;
});

async function start(): Promise<{ health: HealthServer; srv: TestServer }> {
  const health = createHealth({ services: ["luna.billing.v1.BillingService"] });
  current = await startTestServer({ routes: (router) => health.routes(router) });
  return { health, srv: current };
}

describe("health over gRPC (@grpc/grpc-js, HTTP/2 cleartext)", () => {
  it("Check: overall, per service, NOT_FOUND for unknown names", async () => {
    const { health, srv } = await start();
    const client = grpcHealthClient(srv.port);
    try {
      expect((await client.check("")).status).toBe(Status.SERVING);
      health.setStatus("luna.billing.v1.BillingService", false);
      expect((await client.check("luna.billing.v1.BillingService")).status).toBe(Status.NOT_SERVING);
      await expect(client.check("luna.nope.v1.Nope")).rejects.toMatchObject({ code: GrpcStatus.NOT_FOUND });
    } finally {
      client.close();
    }
  });

  it("List returns every known service", async () => {
    const { srv } = await start();
    const client = grpcHealthClient(srv.port);
    try {
      const { statuses } = await client.list();
      expect(Object.keys(statuses).sort()).toEqual(["", "luna.billing.v1.BillingService"]);
      expect(statuses[""]!.status).toBe(Status.SERVING);
    } finally {
      client.close();
    }
  });

  it("Watch streams the current status, then each change, and ends OK on shutdown", async () => {
    const { health, srv } = await start();
    const client = grpcHealthClient(srv.port);
    try {
      const watch = client.watch("");
      await until(() => watch.messages.length === 1);
      health.setStatus("", false);
      await until(() => watch.messages.length === 2);
      health.setStatus("", true);
      await until(() => watch.messages.length === 3);
      health.shutdown();
      const status = await watch.done;
      expect(status.code).toBe(GrpcStatus.OK);
      expect(watch.messages.map((m) => m.status)).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING, Status.NOT_SERVING]);
    } finally {
      client.close();
    }
  });
});

describe("health over Connect", () => {
  it("Check and List over HTTP/1.1, Watch over gRPC-Web", async () => {
    const { health, srv } = await start();
    const connect = createClient(Health, createConnectTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1" }));
    expect((await connect.check({ service: "" })).status).toBe(Status.SERVING);
    await expect(connect.check({ service: "luna.nope.v1.Nope" })).rejects.toMatchObject({ code: Code.NotFound });
    expect(Object.keys((await connect.list({})).statuses)).toContain("luna.billing.v1.BillingService");

    const web = createClient(Health, createGrpcWebTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1" }));
    const seen: Status[] = [];
    for await (const m of web.watch({ service: "luna.chat.v1.ChatService" })) {
      seen.push(m.status);
      if (seen.length === 1) health.setStatus("luna.chat.v1.ChatService", true);
      if (seen.length === 2) health.shutdown();
    }
    expect(seen).toEqual([Status.SERVICE_UNKNOWN, Status.SERVING, Status.NOT_SERVING]);
  });
});
