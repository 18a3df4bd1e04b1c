// Billing as a separate service beside the auth harness: its own database, Redis connection, revocation list and
// verifier — what runService builds for every other service — so a test can show what another service accepts
// after auth revokes a token or an API key.
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { jetstream } from "@nats-io/jetstream";
import {
  apiKeyLookupOver, connectRedis, createApiKeyVerifier, createDirectTransport, createLogger, createMetrics, createRevocationList,
  createServiceVerifier, generateSigningKey, hostModules, loadConfig,
} from "@luna/kit";
import { createTestDatabase, testServers } from "@luna/kit/testing";
import { BillingService } from "@luna/contracts/luna/billing/v1/billing_service_pb.js";
import { BillingAdminService } from "@luna/contracts/luna/billing/v1/billing_admin_service_pb.js";
import { billingConfigSchema, createBillingModule, migrationsDir as billingMigrations } from "@luna/billing";
import type { Harness } from "./harness.js";

export interface BillingBeside {
  balance: Client<typeof BillingService>;
  /** BillingAdminService (grants, reversals). */
  admin: Client<typeof BillingAdminService>;
  close(): Promise<void>;
}

export async function startBillingBeside(h: Harness, opts: { revocationCheckMs: number; apiKeys?: boolean }): Promise<BillingBeside> {
  const log = createLogger({ service: "billing-test", level: "silent" });
  const db = await createTestDatabase({ migrationsDir: billingMigrations, prefix: "billing" });
  const redis = connectRedis(testServers().redisUrl, { log, name: "billing-beside-auth" });
  const metrics = createMetrics({ service: "billing", defaultMetrics: false });
  const module = await createBillingModule(loadConfig(billingConfigSchema, {}), { log, metrics, redis, js: jetstream(h.nc), databaseUrl: db.url });
  const internalKey = await generateSigningKey({ kid: "internal" });
  const revocations = createRevocationList({ redis, checkIntervalMs: opts.revocationCheckMs });
  // API keys are looked up in auth through AuthInternalService (here a direct transport with billing's internal
  // principal, which applies auth's access rules), cached an hour so that only the revocation list can end a cached
  // answer early.
  const apiKeys = opts.apiKeys ? (() => {
    const toAuth = createDirectTransport({ routes: (r) => h.module.routes(r), rules: h.module.authRules,
      principal: { userId: "billing", role: "internal", tokenId: "test" },
      fallback: () => { throw new Error("AuthInternalService has only unary methods"); } });
    return createApiKeyVerifier({ lookup: apiKeyLookupOver(toAuth), revocations, cacheTtlMs: 3_600_000 });
  })() : undefined;
  const verifier = createServiceVerifier({
    userIssuer: h.config.LUNA_JWT_ISSUER,
    audience: h.config.LUNA_JWT_AUDIENCE,
    userKeys: { jwksUrl: `${h.baseUrl}/.well-known/jwks.json` },
    internalIssuer: "luna-internal",
    internalPublicKey: internalKey.publicJwk,
    revocations,
    apiKeys,
  });
  const billing = await hostModules({ modules: [module], verifier, metrics, log, host: "127.0.0.1", port: 0, adminPort: 0,
    corsOrigins: [], shutdownGraceMs: 100, readiness: [] });
  const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${billing.port}`, httpVersion: "1.1" });
  return {
    balance: createClient(BillingService, transport),
    admin: createClient(BillingAdminService, transport),
    async close() {
      await billing.close();
      redis.disconnect();
      await db.drop();
    },
  };
}
