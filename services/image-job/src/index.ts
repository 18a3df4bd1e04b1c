/**
 * @luna/image-job — asynchronous image generation on curated ComfyUI workflows.
 *
 * `createImageJobModule(config, infra)` builds the service module (ImageService for users, ImageWorkerService for
 * workers, the signed image URL route, the outbox relay, the result consumer and the sweeper) that `runService` or
 * the all-in-one process hosts. `createImageWorker(config, deps)` builds the worker that drives one ComfyUI; it
 * runs as its own process beside ComfyUI (`src/worker/main.ts`) or in-process in the all-in-one mode.
 */
import { fileURLToPath } from "node:url";
import type { ConnectRouter, Transport } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { LimitsService } from "@luna/contracts/luna/billing/v1/limits_service_pb.js";
import { ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import {
  outboxPruneOf,
  inboxPruneOf,
  createCatalogCache,
  publishEvent,
  startInboxPruner,
  startOutboxRelay,
  type ConsumerHandle,
  type InboxPruner,
  type MethodRules,
  type HttpContext,
  type NodeServerRequest,
  type NodeServerResponse,
  type OutboxRelay,
  type ReadinessCheck,
  type ServiceInfra,
} from "@luna/kit";
import type { ImageJobConfig } from "./config.js";
import { createJobStore, createPool } from "./data/job-store.js";
import { startResultConsumer } from "./events/result-consumer.js";
import { startUserDeletedConsumer } from "./events/user-deleted.js";
import { startPoolConsumers, type PoolConsumers } from "./events/pool-consumers.js";
import { workerConfigSchema } from "./worker/config.js";
import { createLifecycle } from "./lifecycle.js";
import { createImageJobMetrics } from "./metrics.js";
import { createQueueEstimator } from "./server/queue-estimate.js";
import { authRules, routes } from "./server/routes.js";
import { createSettler } from "./settlement.js";
import { createImageStore, ephemeralUrlSecret, type ImageStore } from "./storage/index.js";
import { imageHttpHandler } from "./storage/http.js";
import { openAIImagesRoute } from "./server/openai-images.js";
import { startSweeper } from "./sweeper.js";

export { configSchema, type ImageJobConfig } from "./config.js";
export { authRules, routes, type RouteDeps } from "./server/routes.js";
export { createImageWorker, type ImageWorker, type ImageWorkerDeps } from "./worker/worker.js";
export { workerConfigSchema, type ImageWorkerConfig } from "./worker/config.js";
export { createImageStore, createLocalStore, createS3Store, storageConfigSchema, type ImageStore, type StorageConfig } from "./storage/index.js";
export { signImageUrl, verifyImageUrl } from "./domain/url-signing.js";
export { Subjects, poolConsumerSpec, poolDurable, poolToken, jobIdForKey } from "./domain/job.js";

/** The workers' default ack wait: what a pool's consumer gets when image-job creates it before any worker ran. */
const WORKER_ACK_WAIT_DEFAULT: number = workerConfigSchema.shape.IMAGE_WORKER_ACK_WAIT.parse(undefined);

/** Directory of this service's migrations (for the runtime's applyMigrations). */
export const migrationsDir = fileURLToPath(new URL("../prisma/migrations", import.meta.url));

/** What the module needs from the runtime (the kit's ServiceInfra). */
export type ImageJobInfra = Pick<ServiceInfra, "log" | "metrics" | "nats" | "js" | "databaseUrl" | "clients">;

export interface ImageJobModule {
  name: "image-job";
  routes(router: ConnectRouter): void;
  authRules: MethodRules;
  /** Signed image URLs (local store) and the OpenAI-compatible `POST /v1/images/generations`. */
  http: (req: NodeServerRequest, res: NodeServerResponse, ctx: HttpContext) => boolean;
  readiness: ReadinessCheck[];
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The image store this module signs URLs for (an in-process worker must write to the same one). */
  imageStore: ImageStore;
  /** Creates the missing `image-worker-<pool>` consumers of every image model now (also done at start). */
  ensurePoolConsumers(): Promise<string[]>;
}

/** A transport created on first use (the all-in-one process creates modules one after another). */
function lazyTransport(get: () => Transport): Transport {
  let t: Transport | undefined;
  return {
    unary: (...args) => (t ??= get()).unary(...args),
    stream: (...args) => (t ??= get()).stream(...args),
  };
}

export async function createImageJobModule(config: ImageJobConfig, infra: ImageJobInfra): Promise<ImageJobModule> {
  const log = infra.log.child({ module: "image-job" });
  let urlSecret = config.IMAGE_URL_SECRET;
  if (!urlSecret) {
    urlSecret = ephemeralUrlSecret();
    if (config.IMAGE_STORE === "local") {
      log.warn({}, "IMAGE_URL_SECRET is not set: image URLs use a random per-process secret (they stop working at restart)");
    }
  }
  const imageStore = createImageStore(config, { urlSecret, publicBaseUrl: config.IMAGE_PUBLIC_BASE_URL });
  const pool = createPool(infra.databaseUrl, config.IMAGE_DB_POOL_SIZE, log);
  let relay: OutboxRelay | undefined;
  let inboxPruner: InboxPruner | undefined;
  const store = createJobStore({
    pool,
    maxRunningPerUser: config.IMAGE_MAX_RUNNING_PER_USER,
    maxQueuedPerUser: config.IMAGE_MAX_QUEUED_PER_USER,
    startCacheSize: config.IMAGE_START_CACHE_SIZE,
    lateResultWindowMs: config.IMAGE_LATE_RESULT_WINDOW,
    afterCommit: () => relay?.kick(),
    publish: config.IMAGE_FAST_DISPATCH
      ? (row) => publishEvent(infra.js, row.subject, row.payload, { msgId: row.id, headers: JSON.parse(row.headers) as Record<string, string> })
      : undefined,
    markDelayMs: config.IMAGE_FAST_DISPATCH_MARK_DELAY,
    log,
  });
  const catalog = createCatalogCache({ transport: lazyTransport(() => infra.clients.transport("model-registry")), nc: infra.nats, log });
  /** A pool at zero workers on purpose (its model STANDBY), with its expected wake time. */
  const poolWake = (modelId: string) => {
    const m = catalog.getModel(modelId);
    return m?.status === ModelStatus.STANDBY ? { coldStartMs: m.coldStartSeconds * 1000 } : undefined;
  };
  const metrics = createImageJobMetrics(infra.metrics.registry, () => store.queueDepths(), (pool) => poolWake(pool) !== undefined);
  const billing = lazyTransport(() => infra.clients.transport("billing"));
  const settler = createSettler({ store, billing, log, metrics, callTimeoutMs: config.IMAGE_BILLING_TIMEOUT });
  const lifecycle = createLifecycle({ nc: infra.nats, metrics, settler, store: imageStore, log });
  const signer = { store: imageStore, urlTtlMs: config.IMAGE_URL_TTL };
  let consumer: ConsumerHandle | undefined;
  let userDeleted: ConsumerHandle | undefined;
  let sweeper: { stop(): Promise<void> } | undefined;
  let poolConsumers: PoolConsumers | undefined;

  const imageRoutes = routes({
    store,
    catalog,
    credits: createClient(CreditsService, billing),
    limits: createClient(LimitsService, billing),
    lifecycle,
    signer,
    estimateQueue: createQueueEstimator({ store, defaultRunMs: config.IMAGE_DEFAULT_RUN_ESTIMATE, poolWake }),
    nc: infra.nats,
    metrics,
    log,
    settings: {
      runDeadline: { baseMs: config.IMAGE_RUN_DEADLINE_BASE, perMegapixelStepMs: config.IMAGE_RUN_DEADLINE_PER_MP_STEP, maxMs: config.IMAGE_RUN_DEADLINE_MAX },
      queueTimeoutMs: config.IMAGE_QUEUE_TIMEOUT,
      deadlineGraceMs: config.IMAGE_DEADLINE_GRACE,
      watchRefreshMs: config.IMAGE_WATCH_REFRESH,
      callTimeoutMs: config.IMAGE_BILLING_TIMEOUT,
    },
  });
  const localImages = config.IMAGE_STORE === "local" ? imageHttpHandler({ store: imageStore, secret: urlSecret, log }) : undefined;
  const openAIImages = openAIImagesRoute({ routes: imageRoutes, rules: authRules, catalog, imageStore, urlSecret,
    waitTimeoutMs: config.IMAGE_OPENAI_WAIT_TIMEOUT, log });

  return {
    name: "image-job",
    imageStore,
    routes: imageRoutes,
    authRules,
    http: (req, res, ctx) => (localImages?.(req, res) ?? false) || openAIImages(req, res, ctx),
    readiness: [
      { name: "image-job-db", check: async () => void (await pool.query("SELECT 1")) },
      catalog.readiness,
    ],
    async start() {
      relay = startOutboxRelay({
        pool, js: infra.js, log, notifyDelayMs: config.IMAGE_RELAY_NOTIFY_DELAY, prune: outboxPruneOf(config),
        metrics: { registry: infra.metrics.registry, outbox: "image-job" },
      });
      inboxPruner = startInboxPruner({ pool, log, ...inboxPruneOf(config) });
      await catalog.start();
      poolConsumers = startPoolConsumers({ js: infra.js, catalog, ackWaitMs: WORKER_ACK_WAIT_DEFAULT, retryMs: 10_000, log });
      consumer = startResultConsumer({ js: infra.js, store, lifecycle, log, concurrency: config.IMAGE_RESULT_CONCURRENCY });
      await consumer.ready;
      userDeleted = startUserDeletedConsumer({ js: infra.js, store, images: imageStore, lifecycle, log });
      sweeper = startSweeper({ store, lifecycle, settler, log, intervalMs: config.IMAGE_SWEEP_INTERVAL, batch: config.IMAGE_SWEEP_BATCH,
        deadlineGraceMs: config.IMAGE_DEADLINE_GRACE, credits: createClient(CreditsService, billing), orphanHoldGraceMs: config.IMAGE_ORPHAN_HOLD_GRACE,
        orphanHoldRescanMs: config.IMAGE_ORPHAN_HOLD_RESCAN, callTimeoutMs: config.IMAGE_BILLING_TIMEOUT });
    },
    ensurePoolConsumers: () => poolConsumers?.ensureAll() ?? Promise.resolve([]),
    async stop() {
      poolConsumers?.stop();
      await sweeper?.stop();
      await consumer?.stop();
      await userDeleted?.stop();
      await inboxPruner?.stop();
      await catalog.stop();
      await relay?.stop();
      await pool.end();
    },
  };
}
