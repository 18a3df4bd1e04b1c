// The billing module hosted for real (kit's hostModules on port 0, real JWTs, gRPC over h2c, Postgres, Redis,
// NATS): auth rules per service, the sweeper and the user-event consumer started by the module, metrics.
import { createClient, Code, ConnectError } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { RateLimitResponse_Code, RateLimitService } from "@luna/contracts/envoy/service/ratelimit/v3/rls_pb.js";
import { BillingService } from "@luna/contracts/luna/billing/v1/billing_service_pb.js";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import {
  connectNats,
  connectRedis,
  createInternalTokenMinter,
  createLogger,
  createMetrics,
  createServiceVerifier,
  ensureStreams,
  generateSigningKey,
  hostModules,
  internalCallInterceptor,
  loadConfig,
  signAccessToken,
  type HostedModules,
} from "@luna/kit";
import { testServers } from "@luna/kit/testing";
import { jetstream } from "@nats-io/jetstream";
import { afterAll, beforeAll, expect, it } from "vitest";
import { billingConfigSchema, createBillingModule, type BillingModule } from "../src/index.js";
import { fundedAccount, openLedgerDb, type LedgerDb } from "./helpers.js";

let t: LedgerDb;
let hosted: HostedModules;
let mod: BillingModule;
let nc: Awaited<ReturnType<typeof connectNats>>;
let redis: ReturnType<typeof connectRedis>;
let userToken: (userId: string) => Promise<string>;
let internalTransport: ReturnType<typeof createGrpcTransport>;
let baseUrl: string;

beforeAll(async () => {
  t = await openLedgerDb();
  const log = createLogger({ service: "billing", level: "silent" });
  redis = connectRedis(testServers().redisUrl, { log, name: "billing-test" });
  await redis.ping();
  nc = await connectNats({ servers: testServers().natsUrl, name: "billing-test", log });
  await ensureStreams(nc);
  const config = loadConfig(billingConfigSchema, { BILLING_SWEEP_INTERVAL: "100ms", BILLING_INVARIANT_CHECK_INTERVAL: "200ms", BILLING_DB_POOL_SIZE: "5" });
  const metrics = createMetrics({ service: "billing" });
  mod = await createBillingModule(config, { log, metrics, redis, js: jetstream(nc), databaseUrl: t.db.url });

  const userKey = await generateSigningKey({ kid: "user-key" });
  const internalKey = await generateSigningKey({ kid: "internal-key" });
  const verifier = createServiceVerifier({
    userIssuer: "luna-auth",
    audience: "luna",
    userKeys: { keys: async () => ({ keys: [userKey.publicJwk] }) },
    internalIssuer: "luna-internal",
    internalPublicKey: internalKey.publicJwk,
  });
  hosted = await hostModules({
    modules: [mod],
    verifier,
    metrics,
    log,
    host: "127.0.0.1",
    port: 0,
    adminPort: 0,
    corsOrigins: [],
    shutdownGraceMs: 1000,
    readiness: [],
  });
  baseUrl = `http://127.0.0.1:${hosted.port}`;
  userToken = (userId) =>
    signAccessToken({ privateKey: userKey.privateKey, kid: userKey.kid, issuer: "luna-auth", audience: "luna", subject: userId, role: "user", ttlSeconds: 300 });
  const minter = createInternalTokenMinter({ privateKey: internalKey.privateJwk, kid: internalKey.kid, issuer: "luna-internal", audience: "luna", subject: "chat-router" });
  internalTransport = createGrpcTransport({ baseUrl, interceptors: [internalCallInterceptor(minter)] });
});

afterAll(async () => {
  await hosted?.close();
  await nc?.close();
  redis?.disconnect();
  await t?.close();
});

async function code(p: Promise<unknown>): Promise<Code> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err).code;
  }
  return 0 as Code;
}

it("serves CreditsService to internal callers only, BillingService to the signed-in user, Envoy without a token", async () => {
  const me = await fundedAccount(t.store, 100n);
  const credits = createClient(CreditsService, internalTransport);
  const hold = await credits.reserve({ accountId: me, amount: 30n, reason: "chat", idempotencyKey: "rpc-1" });
  expect(hold.available).toBe(70n);

  const asUser = createGrpcTransport({ baseUrl, interceptors: [(next) => async (req) => {
    req.header.set("authorization", `Bearer ${await userToken(me)}`);
    return next(req);
  }] });
  expect(await code(createClient(CreditsService, asUser).reserve({ accountId: me, amount: 1n, reason: "chat", idempotencyKey: "x" }))).toBe(Code.PermissionDenied);
  expect(await code(createClient(CreditsService, createGrpcTransport({ baseUrl })).getHold({ holdId: hold.holdId }))).toBe(Code.Unauthenticated);
  expect(await createClient(BillingService, asUser).getBalance({})).toMatchObject({ balance: 100n, held: 30n, available: 70n });

  const rls = createClient(RateLimitService, createGrpcTransport({ baseUrl }));
  const r = await rls.shouldRateLimit({ domain: "luna", descriptors: [{ entries: [{ key: "user_id", value: me }, { key: "feature", value: "chat" }] }] });
  expect(r.overallCode).toBe(RateLimitResponse_Code.OK);
  expect(r.statuses[0]!.currentLimit?.requestsPerUnit).toBe(20);
});

it("the module's sweeper releases holds past their deadline, and metrics are exported", async () => {
  const me = await fundedAccount(t.store, 100n);
  const credits = createClient(CreditsService, internalTransport);
  const hold = await credits.reserve({ accountId: me, amount: 25n, reason: "image", idempotencyKey: "sweep-1", ttl: { seconds: 1n } });
  const deadline = Date.now() + 10_000;
  let status = "open";
  while (status === "open" && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    status = (await t.store.getHold(hold.holdId))!.status;
  }
  expect(status).toBe("expired");
  expect(await t.store.getAccount(me)).toMatchObject({ held: 0n, available: 100n });
  const metrics = await (await fetch(`http://127.0.0.1:${hosted.adminPort}/metrics`)).text();
  // (the kit adds the luna_service label to every series)
  expect(metrics).toMatch(/luna_billing_credits_reserved_total\{[^}]*\} [1-9]/);
  expect(metrics).toMatch(/luna_billing_credits_released_total\{[^}]*how="expire"[^}]*\} [1-9]/);
  expect(metrics).toMatch(/luna_billing_invariant_checks_total\{[^}]*result="ok"[^}]*\} [1-9]/);
  expect(metrics).toMatch(/luna_billing_invariant_violations\{[^}]*invariant="debits_equal_credits"[^}]*\} 0/);
  await t.assertInvariants();
});
