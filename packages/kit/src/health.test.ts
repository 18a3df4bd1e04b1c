import { Code, createClient, createRouterTransport } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { describe, expect, it } from "vitest";
import { createHealth } from "./health.js";

function setup(services?: string[]) {
  const health = createHealth({ services });
  const client = createClient(Health, createRouterTransport((router) => health.routes(router)));
  return { health, client };
}

/** Collects a Watch stream's statuses; `step(i)` runs after the i-th message. */
async function watchAll(stream: AsyncIterable<{ status: Status }>, step: (i: number) => void): Promise<Status[]> {
  const seen: Status[] = [];
  for await (const res of stream) {
    seen.push(res.status);
    step(seen.length);
  }
  return seen;
}

describe("grpc.health.v1 Check and List", () => {
  it('reports "" as SERVING from the start and follows setStatus', async () => {
    const { health, client } = setup();
    expect((await client.check({ service: "" })).status).toBe(Status.SERVING);
    health.setStatus("", false);
    expect((await client.check({ service: "" })).status).toBe(Status.NOT_SERVING);
  });

  it("answers NOT_FOUND for an unknown service name", async () => {
    const { client } = setup();
    await expect(client.check({ service: "luna.nope.v1.Nope" })).rejects.toMatchObject({ code: Code.NotFound });
  });

  it("lists every known service", async () => {
    const { health, client } = setup(["luna.billing.v1.BillingService"]);
    health.setStatus("luna.billing.v1.CreditsService", false);
    const { statuses } = await client.list({});
    expect(Object.fromEntries(Object.entries(statuses).map(([k, v]) => [k, v.status]))).toEqual({
      "": Status.SERVING,
      "luna.billing.v1.BillingService": Status.SERVING,
      "luna.billing.v1.CreditsService": Status.NOT_SERVING,
    });
  });
});

describe("grpc.health.v1 Watch", () => {
  it("sends the current status first, then each change, and ends on shutdown", async () => {
    const { health, client } = setup();
    const seen = await watchAll(client.watch({ service: "" }), (i) => {
      if (i === 1) health.setStatus("", false);
      if (i === 2) health.setStatus("", true);
      if (i === 3) health.shutdown();
    });
    expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING, Status.NOT_SERVING]);
  });

  it("reports SERVICE_UNKNOWN for an unknown name until it becomes known", async () => {
    const { health, client } = setup();
    const seen = await watchAll(client.watch({ service: "luna.chat.v1.ChatService" }), (i) => {
      if (i === 1) health.setStatus("luna.chat.v1.ChatService", true);
      if (i === 2) health.shutdown();
    });
    expect(seen).toEqual([Status.SERVICE_UNKNOWN, Status.SERVING, Status.NOT_SERVING]);
  });

  it("does not repeat a status that did not change", async () => {
    const { health, client } = setup();
    const seen = await watchAll(client.watch({ service: "" }), (i) => {
      if (i === 1) {
        health.setStatus("", true); // unchanged
        health.setStatus("other", false); // another service
        health.setStatus("", false);
      }
      if (i === 2) health.shutdown();
    });
    expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING]);
  });

  it("ignores setStatus after shutdown and ends new watches at once", async () => {
    const { health, client } = setup();
    health.shutdown();
    health.setStatus("", true);
    expect((await client.check({ service: "" })).status).toBe(Status.NOT_SERVING);
    expect(await watchAll(client.watch({ service: "" }), () => {})).toEqual([Status.NOT_SERVING]);
  });

  it("ends when the client cancels", async () => {
    const { client } = setup();
    const abort = new AbortController();
    const seen = await watchAll(client.watch({ service: "" }, { signal: abort.signal }), () => abort.abort())
      .catch((e: unknown) => e);
    expect(seen).toMatchObject({ code: Code.Canceled });
  });
});
