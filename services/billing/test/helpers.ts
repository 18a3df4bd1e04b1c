// Shared setup of billing's integration tests: a migrated database of the shared test Postgres, a pool, the ledger,
// and the invariant assertion every ledger test runs after itself.
import { fileURLToPath } from "node:url";
import { createTestDatabase, startDedicatedRedis, testServers, type TestDatabase } from "@luna/kit/testing";
import { Redis } from "ioredis";
import { createRateLimiter, type RateLimiter } from "../src/limits/limiter.js";
import { parseLimitPolicy } from "../src/limits/policy.js";
import { billingRoutes } from "../src/server/routes.js";
import pg from "pg";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, expect } from "vitest";
import { checkInvariants } from "../src/data/invariants.js";
import { ConnectError, createRouterTransport, type Code, type Interceptor, type Transport } from "@connectrpc/connect";
import { clientAddressKey, loadConfig, principalKey, type Role } from "@luna/kit";
import { billingConfigSchema } from "../src/config.js";
import { LedgerStore, replicaLedgerStore } from "../src/data/ledger-store.js";
import { Ledger } from "../src/ledger.js";
import { createBillingMetrics, type BillingMetrics } from "../src/metrics.js";

export const MIGRATIONS_DIR = fileURLToPath(new URL("../prisma/migrations", import.meta.url));
export const SCHEMA_PATH = fileURLToPath(new URL("../prisma/schema.prisma", import.meta.url));

export interface LedgerDb {
  db: TestDatabase;
  pool: pg.Pool;
  store: LedgerStore;
  ledger: Ledger;
  metrics: BillingMetrics;
  registry: Registry;
  /** Fails the test with every violation listed unless the whole ledger is consistent. */
  assertInvariants(): Promise<void>;
  close(): Promise<void>;
}

export async function openLedgerDb(opts: { poolSize?: number; signupCredits?: number; plainStore?: boolean } = {}): Promise<LedgerDb> {
  const db = await createTestDatabase({ migrationsDir: MIGRATIONS_DIR, prefix: "billing" });
  const pool = new pg.Pool({ connectionString: db.url, max: opts.poolSize ?? 10 });
  // Teardown drops the database WITH (FORCE): the server then terminates connections that may still be closing, and
  // an 'error' event on a client nobody listens to would crash the test worker. Query errors still reach callers.
  pool.on("error", () => undefined);
  pool.on("connect", (client) => client.on("error", () => undefined));
  const registry = new Registry();
  const metrics = createBillingMetrics(registry);
  // As a replica builds it (coalescing concurrent reserves and commits), unless a test asks for the plain store.
  const store = opts.plainStore ? new LedgerStore(pool) : replicaLedgerStore(pool, loadConfig(billingConfigSchema, {}));
  const ledger = new Ledger(store, pool, metrics, {
    holdDefaultTtlMs: 600_000,
    holdMaxTtlMs: 7_200_000,
    signupCredits: opts.signupCredits ?? 1000,
  });
  return {
    db,
    pool,
    store,
    ledger,
    metrics,
    registry,
    async assertInvariants() {
      const report = await checkInvariants(pool);
      expect(report.violations).toEqual([]);
      expect(report.ok).toBe(true);
    },
    async close() {
      await pool.end();
      await db.drop();
    },
  };
}

let accountCounter = 0;
/** A fresh user account id (unique within the test process). */
export function newAccountId(prefix = "u"): string {
  return `${prefix}${process.pid}-${++accountCounter}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Opens an account holding `credits` (granted once). */
export async function fundedAccount(store: LedgerStore, credits: bigint, id = newAccountId()): Promise<string> {
  await store.openAccount(id);
  if (credits > 0n) await store.grant({ accountId: id, amount: credits, reason: "test funds", idempotencyKey: "funds" });
  return id;
}

export const reserveInput = (accountId: string, amount: bigint, key: string, over: Partial<{ reason: string; reference: string; ttlMs: number }> = {}) => ({
  accountId,
  amount,
  idempotencyKey: key,
  reason: over.reason ?? "chat",
  reference: over.reference ?? key,
  ttlMs: over.ttlMs ?? 600_000,
});

/** Path of a worker script and the node arguments that run TypeScript with the workspace's source condition. */
export function workerArgs(script: string): string[] {
  return ["--conditions=luna-source", "--import", "tsx", fileURLToPath(new URL(`./workers/${script}`, import.meta.url))];
}

/**
 * Stands in for the kit's auth interceptor (and, with `clientAddress`, its client-address step) on an in-memory
 * transport: the caller's identity comes from an `x-test-principal: <role>:<user id>` header (see `as`).
 */
export function testPrincipal(opts: { clientAddress?: string } = {}): Interceptor {
  return (next) => (req) => {
    const who = req.header.get("x-test-principal");
    if (who) {
      const [role, userId] = who.split(":") as [Role, string];
      req.contextValues.set(principalKey, { role, userId, tokenId: "t" });
    }
    if (opts.clientAddress) req.contextValues.set(clientAddressKey, opts.clientAddress);
    return next(req);
  };
}

/** Call options carrying the caller for `testPrincipal`. */
export const as = (role: Role, userId = "caller") => ({ headers: { "x-test-principal": `${role}:${userId}` } });

/** The code and message a call failed with (the test fails if it succeeded). */
export async function codeOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}

/**
 * A limiter on a Redis of its own that the test may stop (Redis down): the client fails fast, as the kit's does, and
 * every fail-open call is recorded in `failures`. `dispose` disconnects and removes the server.
 */
export async function limiterOnDedicatedRedis(policyJson: string): Promise<{
  limiter: RateLimiter; failures: string[]; server: Awaited<ReturnType<typeof startDedicatedRedis>>; client: Redis; dispose(): Promise<void>;
}> {
  const server = await startDedicatedRedis();
  const client = new Redis(server.url, { maxRetriesPerRequest: 1, commandTimeout: 500, retryStrategy: () => 100 });
  client.on("error", () => undefined);
  await client.ping();
  const failures: string[] = [];
  const limiter = createRateLimiter(client, parseLimitPolicy(policyJson), { hooks: { failOpen: (op) => failures.push(op) } });
  return {
    limiter, failures, server, client,
    async dispose() {
      client.disconnect();
      await server.dispose();
    },
  };
}

/**
 * Billing's routes over the real ledger (a fresh database) and limiter (the run's Redis, keys under a fresh prefix),
 * through an in-memory Connect transport whose caller is named by `as(...)`; ledger invariants are checked after
 * each test. Registers its own vitest hooks: call it at the top of a test file.
 */
export function billingRoutesHarness(policyJson = "{}"): { readonly t: LedgerDb; readonly transport: Transport } {
  let t: LedgerDb | undefined;
  let redis: Redis | undefined;
  let transport: Transport | undefined;
  beforeAll(async () => {
    t = await openLedgerDb();
    redis = new Redis(testServers().redisUrl, { maxRetriesPerRequest: 1 });
    await redis.ping(); // the limiter fails open until the connection is ready
    const limiter = createRateLimiter(redis, parseLimitPolicy(policyJson), { keyPrefix: `bh${process.pid}${Date.now()}${Math.random().toString(36).slice(2, 6)}` });
    transport = createRouterTransport(billingRoutes({ ledger: t.ledger, limiter, rateLimitDomain: "luna" }), {
      router: { interceptors: [testPrincipal()] },
    });
  });
  afterEach(async () => {
    await t!.assertInvariants();
  });
  afterAll(async () => {
    redis?.disconnect();
    await t?.close();
  });
  return {
    get t() { return t!; },
    get transport() { return transport!; },
  };
}
