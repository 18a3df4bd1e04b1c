// Integration: the registry module on a real server, real Postgres and a NATS JetStream of this file's own (so no
// other test file's model.changed events reach the caches here), with the vLLM and ComfyUI simulators as upstreams.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { fileURLToPath } from "node:url";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  connectNats,
  createCatalogCache,
  createLogger,
  createMetrics,
  createServer,
  ensureStreams,
  internalCallInterceptor,
  renderWorkflow,
  type CatalogCache,
  type LunaServer,
} from "@luna/kit";
import { assertSchemaMatchesDatabase, createTestDatabase, startDedicatedNats, type TestDatabase } from "@luna/kit/testing";
import { startComfySim, type ComfySim } from "@luna/sim-comfyui";
import { startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { ModelService } from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { ModelAdminService } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { ModelUpstreamService } from "@luna/contracts/luna/models/v1/model_upstream_service_pb.js";
import { configSchema, createModelRegistryModule, createPrismaClient, createPrismaStore, migrationsDir, seedCatalog, type RegistryModule } from "../src/index.js";
import { modelInputToSpec } from "../src/domain/convert.js";
import { defaultCatalog } from "../src/domain/seed-catalog.js";
import { createTestAuth, type TestAuth } from "./support.js";

const TEXT_MODELS = ["llama-3.1-8b-abliterated", "mistral-small-24b-abliterated", "qwen2.5-7b-instruct"];
const log = createLogger({ service: "model-registry-test", level: "silent" });

let db: TestDatabase;
let nats: Awaited<ReturnType<typeof startDedicatedNats>>;
let vllm: VllmSim;
let comfy: ComfySim;
let auth: TestAuth;
const opened: Array<() => Promise<unknown>> = [];

interface Running {
  module: RegistryModule;
  server: LunaServer;
  metrics: ReturnType<typeof createMetrics>;
  transport: Transport;
  port: number;
  stop(): Promise<void>;
}

/** Starts a registry "process": its own NATS connection, module and server. */
async function startRegistry(env: Record<string, string>): Promise<Running> {
  const nc = await connectNats({ servers: nats.url, name: "model-registry", log });
  const metrics = createMetrics({ service: "model-registry", defaultMetrics: false });
  const config = configSchema.parse({ REGISTRY_SEED_VLLM_URL: vllm.url, REGISTRY_SEED_COMFYUI_URL: comfy.url, ...env });
  const module = await createModelRegistryModule(config, { log, metrics, js: jetstream(nc), databaseUrl: db.url });
  await module.start();
  const server = createServer({ routes: (r) => module.routes(r), interceptors: [auth.interceptor], log, shutdownGraceMs: 100 });
  const { port } = await server.listen(0, "127.0.0.1");
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` });
  const stop = async () => {
    await server.close();
    await module.stop();
    await nc.drain();
  };
  opened.push(stop);
  return { module, server, metrics, transport, port, stop };
}

/** A catalog cache in another "process": its own NATS connection and gRPC transport carrying an internal token. */
async function startCache(port: number): Promise<{ cache: CatalogCache; nc: NatsConnection }> {
  const nc = await connectNats({ servers: nats.url, name: "chat-router", log });
  const token = await auth.token("internal", "chat-router");
  const transport = createGrpcTransport({
    baseUrl: `http://127.0.0.1:${port}`,
    interceptors: [internalCallInterceptor({ token: async () => token })],
  });
  const cache = createCatalogCache({ transport, nc, log, resyncIntervalMs: 0 });
  await cache.start();
  opened.push(async () => {
    await cache.stop();
    await nc.drain();
  });
  return { cache, nc };
}

beforeAll(async () => {
  [db, nats, vllm, comfy, auth] = await Promise.all([
    createTestDatabase({ migrationsDir }),
    startDedicatedNats(),
    startVllmSim({ models: TEXT_MODELS }),
    startComfySim({ stepMs: 0, nodeMs: 0, previews: false }),
    createTestAuth(),
  ]);
  const nc = await connectNats({ servers: nats.url, name: "setup", log });
  await ensureStreams(nc);
  await nc.drain();
});

afterAll(async () => {
  for (const stop of opened.reverse()) await stop().catch(() => undefined);
  await Promise.allSettled([vllm?.close(), comfy?.close(), nats?.dispose()]);
  await db?.drop();
});

describe("model registry (Postgres, NATS, simulators)", () => {
  it("has a migration that matches schema.prisma", async () => {
    await assertSchemaMatchesDatabase({
      schemaPath: fileURLToPath(new URL("../prisma/schema.prisma", import.meta.url)),
      databaseUrl: db.url,
      ignoreIndexes: ["outbox_events_unpublished_seq_idx"],
    });
  });

  let registry: Running;
  let publicClient: Client<typeof ModelService>;
  let adminClient: Client<typeof ModelAdminService>;

  it("seeds the default catalog on first start, and re-seeding changes nothing (operator edits survive)", async () => {
    registry = await startRegistry({ REGISTRY_HEALTH_INTERVAL: "100ms", REGISTRY_HEALTH_FAILURES: "1", REGISTRY_HEALTH_TIMEOUT: "1s" });
    publicClient = createClient(ModelService, registry.transport);
    adminClient = createClient(ModelAdminService, registry.transport);
    const { models } = await publicClient.listModels({});
    expect(models.map((m) => m.id)).toEqual(defaultCatalog({ vllmUrl: "", comfyuiUrl: "" }).models.map((m) => m.id));
    expect((await publicClient.listWorkflows({})).workflows.map((w) => w.id)).toEqual(["flux-schnell", "sdxl"]);

    // An operator edits a seeded model...
    const spec = modelInputToSpec(defaultCatalog({ vllmUrl: vllm.url, comfyuiUrl: comfy.url }).models[0]!);
    spec.displayName = "Llama (house edition)";
    spec.prices!.outputPer1kTokens = 15n;
    await adminClient.upsertModel({ model: spec }, await auth.as("admin"));
    // ...and the catalog is seeded again (a restart, or a second replica starting).
    const prisma = createPrismaClient(db.url);
    try {
      const store = createPrismaStore({ prisma });
      expect(await seedCatalog(store, { vllmUrl: vllm.url, comfyuiUrl: comfy.url }, log)).toEqual({ models: [], workflows: [] });
      const llama = await store.getModel(spec.id);
      expect(llama).toMatchObject({ displayName: "Llama (house edition)", prices: { outputPer1k: 15n } });
      expect((await store.listModels()).length).toBe(5);
    } finally {
      await prisma.$disconnect();
    }
  });

  it("probes the simulators: healthy → vLLM /health 503 → OFFLINE → recovery, exported as metrics", async () => {
    const llama = TEXT_MODELS[0]!;
    const statusOf = async (id: string) => (await publicClient.getModel({ modelId: id })).model?.status;
    await vi.waitFor(async () => {
      for (const id of [...TEXT_MODELS, "flux1-schnell", "sdxl-base-1.0"]) expect(await statusOf(id), id).toBe(ModelStatus.AVAILABLE);
    }, { timeout: 5000, interval: 50 });

    const gauge = async (model: string, status: string) => {
      const metric = await registry.metrics.registry.getSingleMetric("luna_model_status")!.get();
      return metric.values.find((v) => v.labels.model === model && v.labels.status === status)?.value;
    };
    expect(await gauge(llama, "AVAILABLE")).toBe(1);
    // The outbox relay exports its backlog (kit outbox.ts, refreshed every 5 s): the seed's events are out, so 0.
    await vi.waitFor(async () => {
      const backlog = await registry.metrics.registry.getSingleMetric("luna_outbox_oldest_unpublished_seconds")?.get();
      expect(backlog?.values.find((v) => v.labels.outbox === "model-registry")?.value).toBe(0);
    }, { timeout: 10_000, interval: 100 });

    vllm.setFaults({ unhealthy: true });
    await vi.waitFor(async () => expect(await statusOf(llama)).toBe(ModelStatus.OFFLINE), { timeout: 5000, interval: 50 });
    const { model } = await publicClient.getModel({ modelId: llama });
    expect(model?.statusReason).toMatch(/GET \/health: HTTP 503/);
    await vi.waitFor(async () => {
      expect(await gauge(llama, "OFFLINE")).toBe(1);
      expect(await gauge(llama, "AVAILABLE")).toBe(0);
    }, { timeout: 2000, interval: 50 });

    vllm.setFaults({ unhealthy: false });
    await vi.waitFor(async () => expect(await statusOf(llama)).toBe(ModelStatus.AVAILABLE), { timeout: 5000, interval: 50 });
    await vi.waitFor(async () => expect(await gauge(llama, "AVAILABLE")).toBe(1), { timeout: 2000, interval: 50 });
  });

  it("is DEGRADED when one of two replicas is down", async () => {
    const admin = await auth.as("admin");
    const spec = modelInputToSpec(defaultCatalog({ vllmUrl: vllm.url, comfyuiUrl: comfy.url }).models[2]!);
    // A second replica on a port nothing listens on.
    spec.upstream!.baseUrls = [vllm.url, "http://127.0.0.1:9"];
    await adminClient.upsertModel({ model: spec }, admin);
    await vi.waitFor(async () => {
      const { model } = await publicClient.getModel({ modelId: spec.id });
      expect(model?.status).toBe(ModelStatus.DEGRADED);
      expect(model?.statusReason).toBe("1 of 2 replicas healthy");
    }, { timeout: 5000, interval: 50 });
  });

  it("converges another process's cache within a second of an admin change", async () => {
    const { cache } = await startCache(registry.port);
    expect(cache.loaded).toBe(true);
    const id = "mistral-small-24b-abliterated";
    expect(cache.getModel(id)?.status).toBe(ModelStatus.AVAILABLE);
    expect(cache.upstreams(id)?.baseUrls).toEqual([vllm.url]);

    const started = performance.now();
    await adminClient.setModelEnabled({ modelId: id, enabled: false, reason: "quality regression" }, await auth.as("admin"));
    await vi.waitFor(() => expect(cache.getModel(id)?.status).toBe(ModelStatus.DISABLED), { timeout: 1000, interval: 5 });
    const ms = performance.now() - started;
    console.log(`[model-registry] cache converged ${ms.toFixed(0)} ms after SetModelEnabled(false)`);
    expect(cache.getModel(id)?.statusReason).toBe("quality regression");

    await adminClient.setWorkflowEnabled({ workflowId: "flux-schnell", enabled: false, reason: "maintenance" }, await auth.as("admin"));
    await vi.waitFor(() => expect(cache.getWorkflow("flux-schnell")?.workflow?.status).toBe(ModelStatus.DISABLED), { timeout: 1000, interval: 5 });

    // Health changes reach the cache the same way.
    vllm.setFaults({ unhealthy: true });
    await vi.waitFor(() => expect(cache.getModel(TEXT_MODELS[0]!)?.status).toBe(ModelStatus.OFFLINE), { timeout: 5000, interval: 20 });
    vllm.setFaults({ unhealthy: false });
    await vi.waitFor(() => expect(cache.getModel(TEXT_MODELS[0]!)?.status).toBe(ModelStatus.AVAILABLE), { timeout: 5000, interval: 20 });
  });

  it("a new cache loads the current state, and internal RPCs refuse non-internal callers over the network", async () => {
    const { cache } = await startCache(registry.port);
    expect(cache.getModel("mistral-small-24b-abliterated")?.status).toBe(ModelStatus.DISABLED);
    const upstream = createClient(ModelUpstreamService, registry.transport);
    const err = await upstream.getCatalogSnapshot({}, await auth.as("admin")).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.PermissionDenied);
  });

  it("renders seeded workflows into graphs the ComfyUI simulator accepts", async () => {
    const { cache } = await startCache(registry.port);
    const cases = [
      ["flux-schnell", { prompt: 'a "quoted" fox}, {"evil": 1', count: 2 }],
      ["sdxl", { prompt: "a castle", negativePrompt: "blurry", styleId: "pixel-art" }],
      ["sdxl", { prompt: "a castle" }],
    ] as const;
    for (const [id, params] of cases) {
      const graph = renderWorkflow(cache.getWorkflow(id)!, { ...params, seed: 1 });
      const res = await fetch(`${comfy.url}/prompt`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: graph, client_id: "test" }) });
      expect(res.status, `${id}: ${await res.clone().text()}`).toBe(200);
    }
  });
});
