/**
 * @luna/billing — credits ledger (holds, grants, invariants) and rate limits.
 *
 * `createBillingModule(config, infra)` builds the service module that `runService` (own process) or the all-in-one
 * process hosts. Other services use it only through its RPCs (CreditsService, LimitsService), in-process in the
 * all-in-one mode; `createRateLimiter` is exported for code that wants the limiter without RPC.
 */
import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import { inboxPruneOf, createPgPool, outboxPruneOf, startInboxPruner, startOutboxRelay, type MethodRules, type OutboxRelay, type Metrics, type ReadinessCheck, type Redis } from "@luna/kit";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { BillingConfig } from "./config.js";
import { replicaLedgerStore } from "./data/ledger-store.js";
import { startUserEventConsumer } from "./events/user-events.js";
import { Ledger, startLoop, type MinimalLog } from "./ledger.js";
import { createRateLimiter, type RateLimiter } from "./limits/limiter.js";
import { createBillingMetrics } from "./metrics.js";
import { billingRoutes } from "./server/routes.js";

export { billingConfigSchema, type BillingConfig } from "./config.js";

/** Directory of this service's migrations (for the runtime's applyMigrations). */
export const migrationsDir = fileURLToPath(new URL("../prisma/migrations", import.meta.url));
export { createRateLimiter, parseLeaseId, type AcquireResult, type Lease, type RateDecision, type RateLimiter } from "./limits/limiter.js";
export { DEFAULT_LIMIT_POLICY, parseLimitPolicy, type LimitPolicy } from "./limits/policy.js";
export { billingRoutes } from "./server/routes.js";
export { Ledger } from "./ledger.js";
export { LedgerStore } from "./data/ledger-store.js";

/** Who may call what. The gateway never routes CreditsService, LimitsService or RateLimitService. */
export const BILLING_AUTH_RULES: MethodRules = {
  "luna.billing.v1.BillingService": "user",
  "luna.billing.v1.CreditsService": "internal",
  "luna.billing.v1.LimitsService": "internal",
  "luna.billing.v1.BillingAdminService": "admin",
  // Envoy's ext rate limit filter cannot present a token. It is served only on the cluster network (the gateway
  // routes /luna.* prefixes, never /envoy.*) and can only spend rate-limit budget, never credits.
  "envoy.service.ratelimit.v3.RateLimitService": "public",
};

type Log = MinimalLog & { debug(obj: object, msg?: string): void };

/** What the runtime hands the factory (a subset of the kit's ServiceInfra). */
export interface BillingInfra {
  log: Log;
  metrics: Pick<Metrics, "registry">;
  redis: Redis;
  js?: JetStreamClient;
  databaseUrl: string;
}

export interface BillingModule {
  name: "billing";
  routes(router: ConnectRouter): void;
  authRules: MethodRules;
  readiness: ReadinessCheck[];
  start(): Promise<void>;
  stop(): Promise<void>;
  /** For the all-in-one process, tests and the benchmark. */
  ledger: Ledger;
  limiter: RateLimiter;
}

const FAIL_OPEN_LOG_EVERY_MS = 10_000;

export async function createBillingModule(config: BillingConfig, infra: BillingInfra): Promise<BillingModule> {
  const { log } = infra;
  const pool = createPgPool({ url: infra.databaseUrl, max: config.BILLING_DB_POOL_SIZE, name: "billing", log });
  const metrics = createBillingMetrics(infra.metrics.registry);
  const store = replicaLedgerStore(pool, config, (statement, size) => metrics.ledgerBatchSize.observe({ statement }, size));
  const ledger = new Ledger(store, pool, metrics, {
    holdDefaultTtlMs: config.BILLING_HOLD_DEFAULT_TTL,
    holdMaxTtlMs: config.BILLING_HOLD_MAX_TTL,
    signupCredits: config.BILLING_SIGNUP_CREDITS,
  });

  let lastFailOpenLog = 0;
  const limiter = createRateLimiter(infra.redis, config.BILLING_RATE_LIMITS, {
    hooks: {
      failOpen(operation, err) {
        metrics.rateLimitFailOpen.inc({ operation });
        const now = Date.now();
        if (now - lastFailOpenLog >= FAIL_OPEN_LOG_EVERY_MS) {
          lastFailOpenLog = now;
          log.warn({ err, operation }, "rate limiter cannot reach redis; failing open (requests admitted without limits)");
        }
      },
      rejected(limit) {
        metrics.rateLimitRejections.inc({ limit });
      },
    },
  });

  const stoppers: Array<() => Promise<void>> = [];
  let started = false;

  let relay: OutboxRelay | undefined;

  return {
    name: "billing",
    routes: billingRoutes({ ledger, limiter, rateLimitDomain: config.BILLING_RATELIMIT_DOMAIN, kickOutbox: () => relay?.kick(), log }),
    authRules: BILLING_AUTH_RULES,
    readiness: [{ name: "postgres", check: async () => void (await pool.query("SELECT 1")) }],
    ledger,
    limiter,
    async start() {
      if (started) return;
      started = true;
      const sweeper = startLoop("hold sweeper", config.BILLING_SWEEP_INTERVAL, async () => {
        const n = await ledger.sweepExpiredHolds(config.BILLING_SWEEP_BATCH);
        if (n > 0) log.info({ holds: n }, "released expired holds");
      }, log);
      stoppers.push(() => sweeper.stop());
      // Admin grants and reversals write their audit events (luna.events.audit.billing) into the outbox. The relay
      // owns a small pool (its LISTEN holds a connection), so BILLING_DB_POOL_SIZE stays the ledger's.
      if (infra.js) {
        const outbox = startOutboxRelay({ databaseUrl: infra.databaseUrl, js: infra.js, log, prune: outboxPruneOf(config),
          metrics: { registry: infra.metrics.registry, outbox: "billing" } });
        relay = outbox;
        stoppers.push(async () => {
          relay = undefined;
          await outbox.stop();
        });
      } else {
        log.warn({}, "billing: no JetStream client; admin actions' audit events stay in the outbox until one runs");
      }
      const inboxPruner = startInboxPruner({ pool, log, ...inboxPruneOf(config) });
      stoppers.push(() => inboxPruner.stop());
      if (config.BILLING_INVARIANT_CHECK_INTERVAL > 0) {
        const checker = startLoop("invariant check", config.BILLING_INVARIANT_CHECK_INTERVAL, async () => {
          const r = await ledger.checkInvariants();
          if (!r.ok) log.error({ violations: r.violations }, "LEDGER INVARIANT VIOLATED");
        }, log);
        stoppers.push(() => checker.stop());
      }
      if (config.BILLING_CONSUME_USER_EVENTS) {
        if (!infra.js) throw new Error("billing: BILLING_CONSUME_USER_EVENTS is on but no JetStream client was provided");
        const consumer = startUserEventConsumer({ js: infra.js, pool, ledger, log });
        stoppers.push(() => consumer.stop());
      }
    },
    async stop() {
      for (const stop of stoppers.splice(0).reverse()) await stop();
      await pool.end();
    },
  };
}
