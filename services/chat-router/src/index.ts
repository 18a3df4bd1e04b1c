/**
 * @luna/chat-router — conversations and streamed chat against vLLM / OpenAI-compatible servers.
 *
 * `createChatRouterModule(config, infra)` builds the service module that `runService` (own process) or the
 * all-in-one process hosts. It calls billing (credits, limits) and the model registry (catalog snapshot) through
 * `infra.clients`, follows the catalog over NATS, and coordinates replies across replicas on plain NATS subjects.
 */
import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import {
  outboxPruneOf,
  inboxPruneOf,
  createCatalogCache,
  createPgPool,
  startInboxPruner,
  startOutboxRelay,
  type CatalogCache,
  type ConsumerHandle,
  type HostLookup,
  type InboxPruner,
  type MethodRules,
  type OutboxRelay,
  type ReadinessCheck,
  type ServiceInfra,
  type ServiceModule,
} from "@luna/kit";
import { ModelKind } from "@luna/contracts/luna/models/v1/models_pb.js";
import { BillingClient } from "./chat/billing.js";
import { Conversations } from "./chat/conversations.js";
import { ChatEngine } from "./chat/engine.js";
import { sweepOrphanedReplies } from "./chat/sweeper.js";
import { TitleWriter } from "./chat/titles.js";
import { TokenCounter } from "./chat/tokens.js";
import type { ChatRouterConfig } from "./config.js";
import { ChatStore } from "./data/store.js";
import { startUserDeletedConsumer } from "./events/user-deleted.js";
import { LiveHub, newReplicaId } from "./live/hub.js";
import { createChatMetrics } from "./metrics.js";
import { CHAT_AUTH_RULES, chatRoutes } from "./server/routes.js";
import { openAIRoutes, outboxUsageRecorder } from "./openai/http.js";
import { ReplicaPool } from "./upstream/pool.js";
import { WakeGate } from "./upstream/wake.js";

export { chatRouterConfigSchema, type ChatRouterConfig } from "./config.js";
export { CHAT_AUTH_RULES, chatRoutes } from "./server/routes.js";
export { USAGE_RECORDED_SUBJECT } from "./events/usage.js";
export { LIVE_SUBJECT_PREFIX, SNAPSHOT_SUBJECT_PREFIX, STOP_SUBJECT_PREFIX } from "./live/hub.js";

/** Directory of this service's migrations (for the runtime's applyMigrations). */
export const migrationsDir = fileURLToPath(new URL("../prisma/migrations", import.meta.url));

/** Test and embedding hooks; production uses the defaults. */
export interface ChatRouterOverrides {
  /** Reads an upstream API key by the NAME the catalog gives; default: the process environment. */
  readSecret?: (name: string) => string | undefined;
  /** DNS lookup for `resolve_url` upstreams. */
  lookup?: HostLookup;
}

/** The module (the kit's ServiceModule shape) plus handles for tests and the benchmark. */
export interface ChatRouterModule {
  name: "chat-router";
  routes(router: ConnectRouter): void;
  authRules: MethodRules;
  /** The OpenAI-compatible API (/v1/models, /v1/chat/completions). */
  http: NonNullable<ServiceModule["http"]>;
  readiness: ReadinessCheck[];
  start(): Promise<void>;
  stop(): Promise<void>;
  catalog: CatalogCache;
  engine: ChatEngine;
  replicas: ReplicaPool;
  /** Replies waiting for a model that scaled to zero. */
  wake: WakeGate;
  /** Runs one sweep for orphaned replies now (tests). */
  sweep(): Promise<number>;
}

export async function createChatRouterModule(config: ChatRouterConfig, infra: ServiceInfra, overrides: ChatRouterOverrides = {}): Promise<ChatRouterModule> {
  const log = infra.log.child({ module: "chat-router" });
  const pool = createPgPool({ url: infra.databaseUrl, max: config.CHAT_DB_POOL_SIZE, name: "chat-router", log });
  // One id per process start: written on the replies this process streams, and its live hub's snapshot subject.
  const replicaId = newReplicaId();
  const store = new ChatStore(pool, { replicaId });
  const catalog = createCatalogCache({ transport: infra.clients.transport("model-registry"), nc: infra.nats, log });
  const replicas = new ReplicaPool({
    catalog,
    maxSockets: config.CHAT_UPSTREAM_MAX_SOCKETS,
    breakerFailures: config.CHAT_BREAKER_FAILURES,
    breakerCooldownMs: config.CHAT_BREAKER_COOLDOWN,
    stickySlack: config.CHAT_STICKY_SLACK,
    refreshIntervalMs: config.CHAT_REPLICA_REFRESH_INTERVAL,
    // Upstream API keys are named by the catalog at run time, so they are the one thing read from the environment here.
    readSecret: (name) => readSecret(name),
    lookup: overrides.lookup,
  });
  const readSecret = overrides.readSecret ?? ((name: string) => process.env[name]);
  const wake = new WakeGate({
    pool: replicas, catalog, probeIntervalMs: config.CHAT_WAKE_PROBE_INTERVAL, probeTimeoutMs: config.CHAT_WAKE_PROBE_TIMEOUT,
    readSecret, lookup: overrides.lookup, log,
  });
  const metrics = createChatMetrics(infra.metrics.registry, () => replicas.snapshot(), {
    waiting: () => wake.waitingCounts(),
    textModels: () => catalog.listModels(ModelKind.TEXT).map((m) => m.id),
  });
  const billing = new BillingClient(infra.clients.transport("billing"), log);
  const hub = new LiveHub(infra.nats, log, replicaId);
  const tokens = new TokenCounter({ pool: replicas, timeoutMs: config.CHAT_TOKENIZE_TIMEOUT, bytesPerToken: config.CHAT_ESTIMATE_BYTES_PER_TOKEN, log });
  let relay: OutboxRelay | undefined;
  const titles = config.CHAT_TITLE_ENABLED
    ? new TitleWriter({
        pool: replicas, catalog, save: (id, title) => store.setGeneratedTitle(id, title), titleModel: config.CHAT_TITLE_MODEL,
        maxTokens: config.CHAT_TITLE_MAX_TOKENS, timeoutMs: config.CHAT_TITLE_TIMEOUT, concurrency: config.CHAT_TITLE_CONCURRENCY, log,
      })
    : undefined;
  const engine = new ChatEngine({
    config, catalog, tokens, titles, store, pool: replicas, wake, billing, hub, metrics, log,
    timings: {
      connectTimeoutMs: config.CHAT_UPSTREAM_CONNECT_TIMEOUT,
      firstTokenTimeoutMs: config.CHAT_FIRST_TOKEN_TIMEOUT,
      idleTimeoutMs: config.CHAT_IDLE_TIMEOUT,
      maxReplyMs: config.CHAT_MAX_REPLY_DURATION,
      checkpointIntervalMs: config.CHAT_CHECKPOINT_INTERVAL,
      leaseTtlMs: config.CHAT_LEASE_TTL,
      leaseRenewIntervalMs: config.CHAT_LEASE_RENEW_INTERVAL,
      disconnectGraceMs: config.CHAT_DISCONNECT_GRACE,
      coldStartWaitMs: config.CHAT_COLD_START_WAIT,
      waitingIntervalMs: config.CHAT_WAITING_EVENT_INTERVAL,
    },
  });
  const stopReply = (id: string) => {
    if (!engine.stopLocal(id, "cancelled")) hub.requestStop(id);
  };
  const conversations = new Conversations({ store, catalog, tokens, stopReply, forget: (id) => engine.forget(id), remember: (c) => engine.remember(c, 0) });
  const sweep = () => sweepOrphanedReplies({
    store, billing, catalog, staleMs: config.CHAT_STALE_STREAM_AFTER, orphanHoldGraceMs: config.CHAT_ORPHAN_HOLD_GRACE, localIds: () => engine.activeRuns().map((r) => r.plan.assistantMessageId),
    log,
  });

  let sweepTimer: NodeJS.Timeout | undefined;
  let sweeping: Promise<unknown> | undefined;
  let consumer: ConsumerHandle | undefined;
  let inboxPruner: InboxPruner | undefined;
  let started = false;

  return {
    name: "chat-router",
    routes: chatRoutes({ config, engine, conversations }),
    authRules: CHAT_AUTH_RULES,
    // The OpenAI-compatible API (/v1/models, /v1/chat/completions): the same engine, billing and limits.
    http: openAIRoutes({
      engine, conversations, catalog, recordUsage: outboxUsageRecorder(pool), maxBodyBytes: config.CHAT_OPENAI_MAX_BODY_BYTES,
      maxMessages: config.CHAT_OPENAI_MAX_MESSAGES, maxMessageChars: config.CHAT_MAX_MESSAGE_CHARS,
      maxSystemPromptChars: config.CHAT_MAX_SYSTEM_PROMPT_CHARS, log,
    }),
    readiness: [
      { name: "chat-router-db", check: async () => void (await pool.query("SELECT 1")) },
      catalog.readiness,
    ],
    catalog,
    engine,
    replicas,
    wake,
    sweep,
    async start() {
      if (started) return;
      started = true;
      hub.start();
      await catalog.start();
      relay = startOutboxRelay({
        pool, js: infra.js, log, notifyDelayMs: config.CHAT_RELAY_NOTIFY_DELAY, prune: outboxPruneOf(config),
        metrics: { registry: infra.metrics.registry, outbox: "chat-router" },
      });
      inboxPruner = startInboxPruner({ pool, log, ...inboxPruneOf(config) });
      if (config.CHAT_SWEEP_INTERVAL > 0) {
        sweepTimer = setInterval(() => {
          sweeping ??= sweep().catch((err: unknown) => log.warn({ err }, "orphan sweep failed")).finally(() => (sweeping = undefined));
        }, config.CHAT_SWEEP_INTERVAL);
        sweepTimer.unref();
      }
      if (config.CHAT_CONSUME_USER_EVENTS) {
        consumer = startUserDeletedConsumer({ js: infra.js, store, stopReply, forgetUser: (u) => engine.forgetUser(u), log });
      }
    },
    async stop() {
      if (sweepTimer) clearInterval(sweepTimer);
      await engine.shutdown();
      await sweeping;
      await consumer?.stop();
      await inboxPruner?.stop();
      await relay?.stop();
      hub.stop();
      await catalog.stop();
      wake.close();
      replicas.close();
      await pool.end();
    },
  };
}
