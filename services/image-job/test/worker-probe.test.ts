// Integration: the registry probing an image pool as a cluster runs it — ComfyUI unreachable from outside its pod,
// only the image worker's admin port exposed (charts/comfyui). Real Postgres, Redis and NATS, the real registry, and
// a real image worker process (src/worker/main.ts) with its admin port in front of the ComfyUI simulator. The model's
// upstream says probe WORKER: the registry reads the worker's /readyz, which fails while its ComfyUI does not answer.
import { create } from "@bufbuild/protobuf";
import { ModelSpecSchema, type UpstreamSpec } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { ModelStatus, UpstreamProbe, type CatalogModel } from "@luna/contracts/luna/models/v1/models_pb.js";
import type { ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, freePort, startHarness, type Harness } from "./harness.js";

const POOL = "flux1-schnell";
let h: Harness;
let worker: ChildProcess | undefined;
let adminUrl: string;

async function current(): Promise<CatalogModel> {
  return (await h.admin.getAdminCatalog({})).models.find((m) => m.model?.id === POOL)!;
}

/** Rewrites the pool model's upstream (and scale to zero), keeping its other fields. */
async function setUpstream(upstream: Omit<Partial<UpstreamSpec>, "$typeName">, scaleToZero = false): Promise<void> {
  const m = (await current()).model!;
  await h.admin.upsertModel({ model: create(ModelSpecSchema, {
    id: m.id, displayName: m.displayName, description: m.description, kind: m.kind, tags: m.tags, contextWindow: 0, maxOutputTokens: 0,
    prices: m.prices, sortOrder: m.sortOrder, upstream, scaleToZero, coldStartSeconds: scaleToZero ? 60 : 0,
  }) });
}

async function statusBecomes(status: ModelStatus, what: string): Promise<CatalogModel> {
  return eventually(async () => {
    const c = await current();
    return c.model?.status === status ? c : undefined;
  }, 15_000, what);
}

beforeAll(async () => {
  h = await startHarness({ worker0: false, registry: { REGISTRY_HEALTH_INTERVAL: "150ms", REGISTRY_HEALTH_FAILURES: "1" } });
  const port = await freePort();
  adminUrl = `http://127.0.0.1:${port}`;
  worker = await h.spawnWorker({ IMAGE_WORKER_POOLS: POOL, LUNA_ADMIN_PORT: String(port) });
}, 90_000);

afterAll(async () => {
  worker?.kill("SIGKILL");
  await h?.close();
});

describe("image models probed through their worker's admin port", () => {
  it("the seeded upstream is ComfyUI itself (make dev), probed at /system_stats", async () => {
    expect((await current()).upstream).toMatchObject({ baseUrls: [h.sim.url], probe: UpstreamProbe.COMFYUI });
  });

  it("ComfyUI's probe at the worker's port finds nothing to check: the cluster defect this probe kind fixes", async () => {
    await setUpstream({ baseUrls: [adminUrl], probe: UpstreamProbe.COMFYUI });
    const c = await statusBecomes(ModelStatus.OFFLINE, "OFFLINE with the ComfyUI probe at the worker");
    expect(c.upstream?.replicas[0]?.detail).toMatch(/system_stats: HTTP 404/);
  });

  it("is AVAILABLE while the worker is ready (its ComfyUI answers), OFFLINE with the worker's reason once ComfyUI stops", async () => {
    await setUpstream({ baseUrls: [adminUrl], probe: UpstreamProbe.WORKER });
    const up = await statusBecomes(ModelStatus.AVAILABLE, "AVAILABLE through the worker's /readyz");
    expect(up.upstream).toMatchObject({ probe: UpstreamProbe.WORKER, replicas: [{ baseUrl: adminUrl, healthy: true }] });

    await h.sim.close();
    const down = await statusBecomes(ModelStatus.OFFLINE, "OFFLINE once the worker's ComfyUI is gone");
    expect(down.upstream?.replicas[0]?.detail).toBe("GET /readyz: HTTP 503 (not ready: comfyui)");
    expect(down.model?.statusReason).toMatch(/not ready: comfyui/);
  });

  it("a scale-to-zero pool whose workers' Service resolves to no pod is STANDBY, not OFFLINE", async () => {
    await setUpstream({ resolveUrl: "http://comfyui-flux1-schnell-workers.invalid:9090", probe: UpstreamProbe.WORKER }, true);
    const c = await statusBecomes(ModelStatus.STANDBY, "STANDBY with no worker pod");
    expect(c.model?.statusReason).toMatch(/scaled to zero/);
  });

  it("refuses probe kinds the model's kind cannot use", async () => {
    await expect(setUpstream({ baseUrls: [adminUrl], probe: UpstreamProbe.OPENAI })).rejects.toThrow(/upstream.probe: must be UPSTREAM_PROBE_UNSPECIFIED or UPSTREAM_PROBE_COMFYUI or UPSTREAM_PROBE_WORKER for an image model, got OPENAI/);
  });
});
