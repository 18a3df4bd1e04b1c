// The image worker as its own process (a sidecar next to one ComfyUI): NATS, image-job's internal RPC over the
// network with an internal token, the image store, and an admin port for /metrics, /healthz and /readyz.
import { jetstream } from "@nats-io/jetstream";
import {
  connectNats,
  createLogger,
  createMetrics,
  ensureStreams,
  loadConfig,
  loadInternalKey,
  natsReady,
  networkClients,
  parseServiceUrls,
  runUntilSignal,
  runtimeConfigSchema,
  startAdminServer,
  streamsFor,
} from "@luna/kit";
import { createImageStore } from "../storage/index.js";
import { workerConfigSchema } from "./config.js";
import { createImageWorker } from "./worker.js";

const runtime = loadConfig(runtimeConfigSchema);
const config = loadConfig(workerConfigSchema);
const log = createLogger({ service: "image-worker", level: runtime.LOG_LEVEL });
const nats = await connectNats({ servers: runtime.NATS_URL, name: "image-worker", log });
await ensureStreams(nats, streamsFor(runtime));
const clients = networkClients({ urls: parseServiceUrls(runtime.LUNA_SERVICE_URLS), internalKey: loadInternalKey(runtime),
  issuer: runtime.LUNA_INTERNAL_ISSUER, audience: runtime.LUNA_JWT_AUDIENCE, subject: "image-worker", timeoutMs: runtime.LUNA_CALL_TIMEOUT });
const metrics = createMetrics({ service: "image-worker" });
// The worker only writes objects; it never signs URLs.
const store = createImageStore(config, { urlSecret: "unused-by-the-worker", publicBaseUrl: "" });
const worker = createImageWorker(config, { log, nats, js: jetstream(nats), transport: clients.transport("image-job"), store, registry: metrics.registry });
const admin = await startAdminServer({ port: runtime.LUNA_ADMIN_PORT, host: runtime.LUNA_HOST, registry: metrics.registry,
  readiness: [worker.readiness, { name: "nats", check: () => natsReady(nats) }] });
await worker.start();
runUntilSignal({
  log,
  shutdown: [
    // A running job may finish first (IMAGE_WORKER_DRAIN_TIMEOUT); the step's own timeout leaves room to settle it.
    { name: "worker", run: () => worker.stop(), timeoutMs: config.IMAGE_WORKER_DRAIN_TIMEOUT + 15_000 },
    { name: "admin", run: () => admin.close() },
    { name: "nats", run: () => nats.drain() },
  ],
});
