// Integration (issue 19): an image pool that scaled to zero. Real Postgres, Redis and NATS, the real registry, billing
// and image-job modules, and the ComfyUI simulator in cold-start mode (it refuses prompts and /system_stats with 503
// until its "model load" ends). image-job has created the pool's queue consumer although no worker ever ran (KEDA's
// scaler reads its lag); the job shows "waiting for a GPU" with the pool's expected wake time, and succeeds once a
// worker and its ComfyUI are up — charged once.
import { create } from "@bufbuild/protobuf";
import { JobStatus, QueuePhase } from "@luna/contracts/luna/image/v1/image_pb.js";
import { ModelSpecSchema } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { IMAGE_JOBS_STREAM } from "@luna/kit";
import { jetstream } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { poolConsumerSpec, poolDurable } from "../src/index.js";
import { eventually, startHarness, type Harness } from "./harness.js";
import { waitForJob } from "./helpers.js";

const POOL = "flux1-schnell";
const COLD_START_S = 3;
let h: Harness;

/** The value of one series in the Prometheus text exposition (undefined when absent). */
async function series(name: string, labels: Record<string, string>): Promise<number | undefined> {
  const text = await h.metrics.registry.metrics();
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) {
      return Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return undefined;
}

beforeAll(async () => {
  h = await startHarness({ sim: { stepMs: 5, coldStartMs: 120_000 }, worker0: false, registry: { REGISTRY_HEALTH_INTERVAL: "200ms" } });
}, 60_000);

afterAll(async () => {
  await h?.close();
});

describe("an image pool at zero workers", () => {
  it("has its queue consumer before any worker ran, created as the workers create it; a worker's own settings are kept", async () => {
    const jsm = await jetstream(h.nc).jetstreamManager();
    const pools = await h.imageJob.ensurePoolConsumers();
    expect(pools.sort()).toEqual(["flux1-schnell", "sdxl-base-1.0"]);
    const want = poolConsumerSpec(POOL, 30_000);
    const info = await jsm.consumers.info(IMAGE_JOBS_STREAM, poolDurable(POOL));
    expect(info.config).toMatchObject({ durable_name: "image-worker-flux1-schnell", filter_subject: want.filterSubject, ack_policy: "explicit",
      max_deliver: -1, ack_wait: 30_000 * 1e6 });
    // A worker starts with its own ack wait (the tests' 2 s) and brings the consumer in line; image-job never undoes it.
    const w = await h.startWorker({ IMAGE_WORKER_POOLS: "sdxl-base-1.0" });
    await w.stop();
    await h.imageJob.ensurePoolConsumers();
    expect((await jsm.consumers.info(IMAGE_JOBS_STREAM, poolDurable("sdxl-base-1.0"))).config.ack_wait).toBe(2_000 * 1e6);
    expect((await jsm.consumers.info(IMAGE_JOBS_STREAM, poolDurable(POOL))).config.ack_wait).toBe(30_000 * 1e6);
  });

  it("shows a job as waiting for a GPU with the pool's wake time in its ETA, then runs it after the wake and charges once", async () => {
    // The operator says the pool scales to zero; the registry then reports it STANDBY (the simulator is still loading).
    const catalog = await h.admin.getAdminCatalog({});
    const current = catalog.models.find((m) => m.model?.id === POOL)!;
    const m = current.model!;
    const u = current.upstream!;
    await h.admin.upsertModel({ model: create(ModelSpecSchema, {
      id: m.id, displayName: m.displayName, description: m.description, kind: m.kind, tags: m.tags, contextWindow: 0, maxOutputTokens: 0,
      prices: m.prices, sortOrder: m.sortOrder,
      upstream: { baseUrls: u.baseUrls, resolveUrl: u.resolveUrl, apiKeyEnv: u.apiKeyEnv, servedModelName: u.servedModelName },
      scaleToZero: true, coldStartSeconds: COLD_START_S,
    }) });
    await eventually(async () => ((await h.admin.getAdminCatalog({})).models.find((x) => x.model?.id === POOL)?.model?.status === ModelStatus.STANDBY) || undefined,
      10_000, "the pool STANDBY");

    const user = await h.newUser();
    const before = await h.balance(user.id);
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "a lighthouse at dusk", idempotencyKey: "s2z-1" });
    const first = await eventually(async () => {
      const j = (await user.client.getJob({ jobId: job!.id })).job!;
      return j.queuePhase === QueuePhase.WAITING_FOR_GPU ? j : undefined;
    }, 10_000, "the waiting-for-GPU phase");
    expect(first.status).toBe(JobStatus.QUEUED);
    const created = timestampMs(first.createdAt!);
    const gpuReady = timestampMs(first.gpuReadyAt!);
    expect(gpuReady).toBeGreaterThanOrEqual(created + COLD_START_S * 1000 - 5);
    expect(timestampMs(first.estimatedStartAt!)).toBeGreaterThanOrEqual(gpuReady);
    expect((await h.balance(user.id)).held).toBe(before.held + 50n);
    expect(await series("luna_image_jobs_waiting_for_gpu", { pool: POOL })).toBe(1);

    // WatchJob says the same; then the pool wakes: a worker starts beside a ComfyUI that finishes loading shortly.
    const watch = user.client.watchJob({ jobId: job!.id })[Symbol.asyncIterator]();
    const watched = (await watch.next()).value!.job!;
    expect(watched.queuePhase).toBe(QueuePhase.WAITING_FOR_GPU);
    await watch.return?.();
    h.sim.coldStart(1000);
    await h.startWorker({ IMAGE_WORKER_POOLS: POOL, IMAGE_WORKER_COMFY_WAIT: "10s" });
    const done = await waitForJob(user.client, job!.id, JobStatus.SUCCEEDED, 30_000);
    expect(done.images.length).toBe(1);
    expect(done.queuePhase).toBe(QueuePhase.UNSPECIFIED);
    expect(done.creditsCharged).toBe(50n);
    const after = await h.balance(user.id);
    expect(after.balance).toBe(before.balance - 50n);
    expect(after.held).toBe(before.held);
    expect(h.sim.stats().executions[job!.id]).toBe(1);
    expect(await series("luna_image_jobs_waiting_for_gpu", { pool: POOL })).toBe(0);
    await h.assertLedgerConsistent();
  }, 60_000);
});
