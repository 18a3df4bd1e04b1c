/**
 * @luna/auth — invite-only accounts, sessions and tokens. The all-in-one process and `main.ts` both host it through
 * `createAuthModule(config, infra)`.
 */
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { JetStreamClient } from "@nats-io/jetstream";
import { createRevocationList, inboxPruneOf, outboxPruneOf, type ConsumerHandle, startOutboxRelay, type Logger, type OutboxRelay, type ReadinessCheck, type Redis, type ServiceModule } from "@luna/kit";
import { Accounts } from "./accounts.js";
import type { AuthConfig } from "./config.js";
import { createDb } from "./data/db.js";
import { startAuditEventConsumer } from "./events/audit-events.js";
import { AuthStore } from "./data/store.js";
import { kekFromBytes, parseKek, type Kek } from "./domain/key-encryption.js";
import { createArgon2Hasher } from "./domain/password-hasher.js";
import { loadCommonPasswords, type PasswordPolicy } from "./domain/password-policy.js";
import { createAccessTokenIssuer } from "./keys/access-token.js";
import { KeyStore, type Jwks } from "./keys/key-store.js";
import { jwksHttpHandler } from "./server/jwks-http.js";
import { authRules, routes } from "./server/routes.js";
import { createRedisThrottle } from "./throttle/throttle.js";
import { createAuthMetrics } from "./metrics.js";
import type { Registry } from "prom-client";

export { authConfigSchema, type AuthConfig } from "./config.js";

/** Directory of this service's migrations (for the runtime's applyMigrations). */
export const migrationsDir = fileURLToPath(new URL("../prisma/migrations", import.meta.url));
export { authRules, routes, type RouteDeps, type AccountsApi } from "./server/routes.js";
export { Accounts } from "./accounts.js";
export { JWKS_PATH } from "./server/jwks-http.js";
export { USER_CREATED_SUBJECT, USER_DELETED_SUBJECT } from "./events/user-events.js";
export type { Jwks } from "./keys/key-store.js";

/** What the factory needs from the runtime (a subset of the kit's ServiceInfra). */
export type AuthInfra = {
  log: Logger;
  redis: Redis;
  /** Publishes the outbox; consumes other services' admin actions into the audit log. */
  js: JetStreamClient;
  /** Auth's own database. */
  databaseUrl: string;
  /** Where auth's domain metrics are registered (the kit's Metrics); omitted: not collected. */
  metrics?: { registry: Registry };
};

/** Options of {@link AuthModule.bootstrapDev}. */
export type BootstrapDevOptions = {
  /** How many single-use codes to create when none is usable. */
  inviteCount: number;
  /** Written with the usable codes, one per line (e.g. `.luna/invites.txt`). */
  invitesFile: string;
};

/** The auth ServiceModule, plus what the all-in-one process needs from it. */
export interface AuthModule extends ServiceModule {
  name: "auth";
  http: NonNullable<ServiceModule["http"]>;
  readiness: ReadinessCheck[];
  /** Ensures a signing key, starts key rotation and the outbox relay, creates the first admin if configured. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The JWKS (what `/.well-known/jwks.json` serves): in-process verifiers use it as `keys: () => auth.jwks()`. */
  jwks(): Promise<Jwks>;
  /** Checks a personal API key against the database (what AuthInternalService.VerifyApiKey answers). */
  apiKeyLookup: NonNullable<ServiceModule["apiKeyLookup"]>;
  /** Runs the key rotation check now (it also runs every AUTH_KEY_CHECK_INTERVAL). */
  rotateKeysNow(): Promise<void>;
  /** `make dev`: usable invite codes, printed and written to a file; idempotent (see Accounts.bootstrapDevInvites). */
  bootstrapDev(opts: BootstrapDevOptions): Promise<string[]>;
  /** The use cases, for tools and tests. */
  accounts: Accounts;
}

export type CreateAuthModuleOptions = {
  /** The service's clock (sessions, invites, throttling, key rotation); tests move it instead of waiting. */
  clock?: () => Date;
};

// Development-only key-encryption key (see AUTH_KEY_ENCRYPTION_KEY): derived from a public string, so it protects
// nothing; it only keeps the code path identical to production.
const DEV_KEK_SEED = "luna-auth-development-key-encryption-key (not secret; set AUTH_KEY_ENCRYPTION_KEY)";

function keyEncryptionKey(config: AuthConfig, log: Logger): Kek {
  if (config.AUTH_KEY_ENCRYPTION_KEY) return parseKek(config.AUTH_KEY_ENCRYPTION_KEY);
  log.warn("AUTH_KEY_ENCRYPTION_KEY is not set: signing keys are sealed with the built-in development key; set it in production");
  return kekFromBytes(createHash("sha256").update(DEV_KEK_SEED).digest());
}

/** Builds the auth module: nothing runs until `start()` (the runtime calls it after the server is listening). */
export async function createAuthModule(config: AuthConfig, infra: AuthInfra, opts: CreateAuthModuleOptions = {}): Promise<AuthModule> {
  const log = infra.log;
  const clock = opts.clock ?? (() => new Date());
  const db = createDb(infra.databaseUrl);
  const store = new AuthStore(db);
  const policy: PasswordPolicy = { minLength: config.AUTH_PASSWORD_MIN_LENGTH, maxLength: config.AUTH_PASSWORD_MAX_LENGTH, common: loadCommonPasswords() };
  const hasher = createArgon2Hasher(
    { memoryKiB: config.AUTH_ARGON2_MEMORY_KIB, iterations: config.AUTH_ARGON2_ITERATIONS, parallelism: config.AUTH_ARGON2_PARALLELISM },
    { maxConcurrency: config.AUTH_ARGON2_MAX_CONCURRENCY },
  );
  const keys = new KeyStore(store, keyEncryptionKey(config, log), {
    rotationIntervalMs: config.AUTH_KEY_ROTATION_INTERVAL,
    prepublishMs: config.AUTH_KEY_PREPUBLISH,
    retainAfterSupersededMs: config.AUTH_ACCESS_TOKEN_TTL + config.AUTH_CLOCK_SKEW,
    checkIntervalMs: config.AUTH_KEY_CHECK_INTERVAL,
  }, log, clock);
  const tokens = createAccessTokenIssuer({ keys, issuer: config.LUNA_JWT_ISSUER, audience: config.LUNA_JWT_AUDIENCE, ttlMs: config.AUTH_ACCESS_TOKEN_TTL });
  const throttle = createRedisThrottle({
    redis: infra.redis,
    log,
    now: () => clock().getTime(),
    signIn: {
      maxFailuresPerHour: config.AUTH_SIGNIN_ACCOUNT_MAX_FAILURES,
      freeFailures: config.AUTH_SIGNIN_FREE_FAILURES,
      baseDelayMs: config.AUTH_SIGNIN_BASE_DELAY,
      maxDelayMs: config.AUTH_SIGNIN_MAX_DELAY,
      ipMaxFailures: config.AUTH_SIGNIN_IP_MAX_FAILURES,
      ipWindowMs: config.AUTH_SIGNIN_IP_WINDOW,
    },
    invite: { ipMaxAttempts: config.AUTH_INVITE_IP_MAX_ATTEMPTS, ipWindowMs: config.AUTH_INVITE_IP_WINDOW },
  });
  let relay: OutboxRelay | undefined;
  let auditConsumer: ConsumerHandle | undefined;
  const accounts = new Accounts({
    store, hasher, policy, tokens, throttle, log, clock,
    revocations: createRevocationList({ redis: infra.redis, log }),
    metrics: infra.metrics ? createAuthMetrics(infra.metrics.registry) : undefined,
    kickOutbox: () => relay?.kick(),
    config: {
      openSignUp: config.AUTH_OPEN_SIGNUP,
      refreshTokenTtlMs: config.AUTH_REFRESH_TOKEN_TTL,
      sessionMaxLifetimeMs: config.AUTH_SESSION_MAX_LIFETIME,
      refreshGraceMs: config.AUTH_REFRESH_GRACE,
      revocationTtlMs: config.AUTH_ACCESS_TOKEN_TTL + config.AUTH_CLOCK_SKEW,
      apiKeyMaxActive: config.AUTH_API_KEY_MAX_ACTIVE,
      apiKeyRevocationTtlMs: config.AUTH_API_KEY_REVOCATION_TTL,
      apiKeyTouchIntervalMs: config.AUTH_API_KEY_TOUCH_INTERVAL,
    },
  });

  return {
    name: "auth",
    routes: routes({ accounts, policy, openSignUp: config.AUTH_OPEN_SIGNUP }),
    authRules,
    http: jwksHttpHandler({ jwks: () => keys.jwks(), maxAgeMs: config.AUTH_JWKS_MAX_AGE, log }),
    readiness: [{ name: "auth-postgres", check: async () => void (await db.$queryRaw`SELECT 1`) }],
    async start() {
      await keys.rotateIfDue();
      keys.start();
      relay = startOutboxRelay({
        databaseUrl: infra.databaseUrl, js: infra.js, log, prune: outboxPruneOf(config),
        metrics: infra.metrics && { registry: infra.metrics.registry, outbox: "auth" },
      });
      await accounts.ensureFirstAdmin({ email: config.AUTH_ADMIN_EMAIL, password: config.AUTH_ADMIN_PASSWORD });
      auditConsumer = startAuditEventConsumer({ js: infra.js, store, log, inboxPrune: { databaseUrl: infra.databaseUrl, ...inboxPruneOf(config) } });
    },
    async stop() {
      await auditConsumer?.stop();
      auditConsumer = undefined;
      keys.stop();
      await relay?.stop();
      relay = undefined;
      await db.$disconnect();
    },
    jwks: () => keys.jwks(),
    apiKeyLookup: (key) => accounts.verifyApiKey(key),
    rotateKeysNow: () => keys.rotateIfDue(),
    bootstrapDev: (o) => accounts.bootstrapDevInvites(o),
    accounts,
  };
}
