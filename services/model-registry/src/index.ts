// The model registry as a module the kit's runtime (one service per process, or all in one) can host.
import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import { outboxPruneOf, startOutboxRelay, type HostLookup, type Logger, type MethodRules, type Metrics, type OutboxRelay, type ReadinessCheck } from "@luna/kit";
import type { RegistryConfig } from "./config.js";
import { createPrismaClient, createPrismaStore } from "./data/prisma-store.js";
import { createStatusMetrics } from "./health/metrics.js";
import { createHealthProber } from "./health/prober.js";
import { seedCatalog } from "./seed.js";
import { authRules, routes } from "./server/routes.js";

export { configSchema, type RegistryConfig } from "./config.js";
export { authRules, routes, type RouteDeps } from "./server/routes.js";
export { createPrismaClient, createPrismaStore } from "./data/prisma-store.js";
export { createMemoryStore } from "./data/memory-store.js";
export type { CatalogStore } from "./data/store.js";
export { createHealthProber, type HealthProber } from "./health/prober.js";
export { defaultCatalog } from "./domain/seed-catalog.js";
export { modelInputToSpec, workflowInputToSpec } from "./domain/convert.js";
export { seedCatalog } from "./seed.js";

/** Directory of this service's migrations (for the runtime's applyMigrations). */
export const migrationsDir = fileURLToPath(new URL("../prisma/migrations", import.meta.url));

/** What the registry needs from the runtime (a subset of the kit's ServiceInfra). */
export interface RegistryInfra {
  log: Logger;
  metrics: Metrics;
  /** JetStream client the outbox relay publishes with. */
  js: Parameters<typeof startOutboxRelay>[0]["js"];
  /** The registry's own database. */
  databaseUrl: string;
}

/** The module (the kit's ServiceModule shape). */
export interface RegistryModule {
  name: string;
  routes(router: ConnectRouter): void;
  authRules: MethodRules;
  readiness: ReadinessCheck[];
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface RegistryModuleOverrides {
  /** Reads an upstream API key by its NAME; default: the process environment. */
  readSecret?: (name: string) => string | undefined;
  /** DNS lookup for `resolve_url` upstreams (tests). */
  lookup?: HostLookup;
}

/**
 * Creates the model-registry module: the public `ModelService`, the admin `ModelAdminService` and the internal
 * `ModelUpstreamService`; on start it seeds the default catalog (if enabled), starts the outbox relay that
 * publishes `luna.events.model.changed`, and starts probing upstream health.
 */
export async function createModelRegistryModule(
  config: RegistryConfig,
  infra: RegistryInfra,
  overrides: RegistryModuleOverrides = {},
): Promise<RegistryModule> {
  const log = infra.log.child({ module: "model-registry" });
  const prisma = createPrismaClient(infra.databaseUrl);
  let relay: OutboxRelay | undefined;
  const store = createPrismaStore({ prisma, afterCommit: () => relay?.kick() });
  const statusMetrics = createStatusMetrics(infra.metrics.registry);
  const probing = config.REGISTRY_HEALTH_INTERVAL > 0;
  const prober = createHealthProber({
    store,
    log,
    intervalMs: config.REGISTRY_HEALTH_INTERVAL,
    timeoutMs: config.REGISTRY_HEALTH_TIMEOUT,
    failuresToUnhealthy: config.REGISTRY_HEALTH_FAILURES,
    // The one place below main.ts that reads the environment: API keys are named by the catalog at run time.
    readSecret: overrides.readSecret ?? ((name) => process.env[name]),
    lookup: overrides.lookup,
    onProbed: (models) => statusMetrics.update(models),
  });

  return {
    name: "model-registry",
    routes: routes({
      store,
      log,
      onModelChanged: (model) => {
        statusMetrics.set(model);
        // An edited upstream or a re-enabled model gets a fresh status now rather than at the next round.
        if (probing) void prober.probeAll().catch((err: unknown) => log.warn({ err }, "health probe failed"));
      },
    }),
    authRules,
    readiness: [
      {
        name: "model-registry-db",
        check: async () => {
          await prisma.$queryRaw`SELECT 1`;
        },
      },
    ],
    async start() {
      relay = startOutboxRelay({
        databaseUrl: infra.databaseUrl, js: infra.js, log, prune: outboxPruneOf(config),
        metrics: { registry: infra.metrics.registry, outbox: "model-registry" },
      });
      if (config.REGISTRY_SEED) {
        await seedCatalog(store, { vllmUrl: config.REGISTRY_SEED_VLLM_URL, comfyuiUrl: config.REGISTRY_SEED_COMFYUI_URL,
          imageWorkers: config.REGISTRY_SEED_IMAGE_WORKERS }, log);
      }
      statusMetrics.update(await store.listModels());
      prober.start();
    },
    async stop() {
      await prober.stop();
      await relay?.stop();
      await prisma.$disconnect();
    },
  };
}
