// The Prisma store against a real Postgres: the write rules under concurrency, and exactly one outbox event per
// change (no NATS here, so the rows stay in the outbox to be read back).
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { MODEL_CHANGED_SUBJECT } from "@luna/kit";
import { createTestDatabase, type TestDatabase } from "@luna/kit/testing";
import { ModelChangedSchema } from "@luna/contracts/luna/events/v1/model_events_pb.js";
import { ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { createPrismaClient, createPrismaStore, migrationsDir } from "../src/index.js";
import { defaultCatalog } from "../src/domain/seed-catalog.js";
import type { CatalogStore } from "../src/data/store.js";
import type { ModelInput } from "../src/domain/types.js";

const catalog = defaultCatalog({ vllmUrl: "http://vllm:8000", comfyuiUrl: "http://comfy:8188" });
let db: TestDatabase;
let prisma: ReturnType<typeof createPrismaClient>;
let store: CatalogStore;
let kicks = 0;

async function outbox(): Promise<Array<{ subject: string; id: string; version: bigint; case: string }>> {
  const rows = await prisma.outboxEvent.findMany({ orderBy: { seq: "asc" } });
  return rows.map((r) => {
    const ev = fromBinary(ModelChangedSchema, r.payload);
    const version = ev.entry.case === "model" ? ev.entry.value.model!.version : ev.entry.case === "workflow" ? ev.entry.value.workflow!.version : -1n;
    expect(ev.meta?.eventId).toBe(r.id);
    return { subject: r.subject, id: ev.meta!.subjectId, version, case: ev.entry.case ?? "" };
  });
}

const model = (over: Partial<ModelInput> = {}): ModelInput => ({ ...catalog.models[0]!, id: "m-concurrent", ...over });

beforeAll(async () => {
  db = await createTestDatabase({ migrationsDir });
  prisma = createPrismaClient(db.url);
  store = createPrismaStore({ prisma, afterCommit: () => kicks++ });
});

beforeEach(async () => {
  await prisma.catalogWorkflow.deleteMany();
  await prisma.catalogModel.deleteMany();
  await prisma.outboxEvent.deleteMany();
  kicks = 0;
});

afterAll(async () => {
  await prisma?.$disconnect();
  await db?.drop();
});

describe("Prisma catalog store", () => {
  it("writes one model.changed outbox event per change, carrying the new version, and wakes the relay", async () => {
    await store.upsertModel(model(), 0n);
    await store.upsertModel(model({ displayName: "Renamed" }), 1n);
    await store.setModelEnabled("m-concurrent", false, "off");
    await store.setModelEnabled("m-concurrent", false, "off"); // no change: no event
    await store.recordHealth("m-concurrent", { status: "OFFLINE", reason: "awaiting first health check", replicas: [] }); // same: none
    await store.recordHealth("m-concurrent", { status: "AVAILABLE", reason: "", replicas: [{ baseUrl: "http://a:1", healthy: true, detail: "", checkedAt: new Date() }] });
    expect(await outbox()).toEqual([1n, 2n, 3n, 4n].map((version) => ({ subject: MODEL_CHANGED_SUBJECT, id: "m-concurrent", version, case: "model" })));
    expect(kicks).toBe(4);
    const m = await store.getModel("m-concurrent");
    expect(m).toMatchObject({ displayName: "Renamed", enabled: false, disabledReason: "off", version: 4n, health: { status: "AVAILABLE" } });
    expect(m?.health.replicas[0]).toMatchObject({ baseUrl: "http://a:1", healthy: true });
  });

  it("keeps a model's scale-to-zero settings and records its STANDBY status (migration's status check included)", async () => {
    await store.upsertModel(model({ scaleToZero: true, coldStartSeconds: 120 }), 0n);
    const changed = await store.recordHealth("m-concurrent", { status: "STANDBY", reason: "scaled to zero; wakes on demand in about 120 s", replicas: [] });
    expect(changed).toMatchObject({ scaleToZero: true, coldStartSeconds: 120, health: { status: "STANDBY" } });
    expect(await store.getModel("m-concurrent")).toMatchObject({ scaleToZero: true, coldStartSeconds: 120, health: { status: "STANDBY" } });
    const rows = await prisma.outboxEvent.findMany({ orderBy: { seq: "asc" } });
    const last = fromBinary(ModelChangedSchema, rows.at(-1)!.payload);
    expect(last.entry.case === "model" && last.entry.value.model).toMatchObject({ status: ModelStatus.STANDBY, scaleToZero: true, coldStartSeconds: 120 });
    // The database refuses a status it does not know, and a negative cold start.
    await expect(prisma.$executeRaw`UPDATE models SET health_status = 'ASLEEP' WHERE id = 'm-concurrent'`).rejects.toThrow(/models_health_status_check/);
    await expect(prisma.$executeRaw`UPDATE models SET cold_start_seconds = -1 WHERE id = 'm-concurrent'`).rejects.toThrow(/models_cold_start_check/);
  });

  it("keeps an upstream's probe kind; rows from before it (\"\") read as the kind's default; unknown ones are refused", async () => {
    const image = catalog.models.find((m) => m.kind === "IMAGE")!;
    const workers = { baseUrls: [], resolveUrl: "http://comfyui-flux1-schnell-workers:9090", apiKeyEnv: "", servedModelName: "", probe: "WORKER" as const };
    await store.upsertModel({ ...image, id: "img-worker", upstream: workers }, 0n);
    expect((await store.getModel("img-worker"))?.upstream).toEqual(workers);
    await store.upsertModel(model(), 0n);
    await prisma.$executeRaw`UPDATE models SET upstream_probe = '' WHERE id IN ('img-worker', 'm-concurrent')`;
    expect((await store.getModel("img-worker"))?.upstream.probe).toBe("COMFYUI");
    expect((await store.getModel("m-concurrent"))?.upstream.probe).toBe("OPENAI");
    await expect(prisma.$executeRaw`UPDATE models SET upstream_probe = 'PING' WHERE id = 'img-worker'`).rejects.toThrow(/models_upstream_probe_check/);
  });

  it("lets exactly one of several concurrent updates at the same expected version through", async () => {
    await store.upsertModel(model(), 0n);
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, (_, i) => store.upsertModel(model({ displayName: `writer ${i}` }), 1n)),
    );
    const ok = results.filter((r) => r.status === "fulfilled");
    const aborted = results.filter((r) => r.status === "rejected" && ConnectError.from(r.reason).code === Code.Aborted);
    expect([ok.length, aborted.length]).toEqual([1, 5]);
    expect((await store.getModel("m-concurrent"))?.version).toBe(2n);
    expect((await outbox()).length).toBe(2);
  });

  it("creates a new id once when several writers race to create it", async () => {
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => store.upsertModel(model(), 0n)));
    const created = results.filter((r) => r.status === "fulfilled" && r.value.created).length;
    const updated = results.filter((r) => r.status === "fulfilled" && !r.value.created).length;
    const aborted = results.filter((r) => r.status === "rejected" && ConnectError.from(r.reason).code === Code.Aborted).length;
    expect(created).toBe(1);
    expect(created + updated + aborted).toBe(6);
    expect((await store.getModel("m-concurrent"))?.version).toBe(BigInt(created + updated));
    expect((await outbox()).length).toBe(created + updated);
  });

  it("seeds only what is missing, once, even when replicas seed at the same time", async () => {
    const runs = await Promise.all([1, 2, 3].map(() => store.seed(catalog.models, catalog.workflows)));
    expect(runs.flatMap((r) => r.models).sort()).toEqual(catalog.models.map((m) => m.id).sort());
    expect(runs.flatMap((r) => r.workflows).sort()).toEqual(["flux-schnell", "sdxl"]);
    expect((await outbox()).length).toBe(catalog.models.length + catalog.workflows.length);
    expect(await store.seed(catalog.models, catalog.workflows)).toEqual({ models: [], workflows: [] });
  });

  it("keeps workflows on image models and their kind fixed while they exist", async () => {
    await store.seed(catalog.models, catalog.workflows);
    const sdxl = catalog.models.find((m) => m.id === "sdxl-base-1.0")!;
    const err = await store.upsertModel({ ...sdxl, kind: "TEXT", contextWindow: 4096, maxOutputTokens: 512 }, 0n).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
    const wf = catalog.workflows[0]!;
    const bad = await store.upsertWorkflow({ ...wf, id: "wf-2", modelId: "qwen2.5-7b-instruct" }, 0n).catch((e: unknown) => ConnectError.from(e));
    expect((bad as ConnectError).code).toBe(Code.InvalidArgument);
    expect(await store.getWorkflow("wf-2")).toBeUndefined();
  });

  it("round-trips workflows exactly (template text, bindings, parameters)", async () => {
    await store.seed(catalog.models, catalog.workflows);
    const w = await store.getWorkflow("sdxl");
    const seeded = catalog.workflows.find((x) => x.id === "sdxl")!;
    expect(w).toMatchObject({ ...seeded, enabled: true, version: 1n });
  });
});
