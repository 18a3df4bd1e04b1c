// Integration harness: the auth module on a real server (port 0) with the kit's interceptors and a verifier that reads
// the service's own JWKS over HTTP (as the gateway and other services do), against the run's real Postgres, Redis and
// NATS. Each harness has its own database, and a random client IP (x-forwarded-for) so throttles never collide.
import { randomBytes, randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { ConnectError, createClient, type Client, type Code, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Registry } from "prom-client";
import {
  acceptingApiKeys, authInterceptor, connectNats, connectRedis, createApiKeyVerifier, createJwtVerifier, createLogger, createRevocationList, createServer, ensureStreams, loadConfig,
  revocationCheckingVerifier, EVENTS_STREAM, type JwtVerifier, type LunaServer, type Redis, type TrustedProxies,
} from "@luna/kit";
import { createTestDatabase, testServers, type TestDatabase } from "@luna/kit/testing";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { AuthAdminService } from "@luna/contracts/luna/auth/v1/auth_admin_service_pb.js";
import { authConfigSchema, createAuthModule, type AuthConfig, type AuthModule } from "../src/index.js";
import { createDb, type Db } from "../src/data/db.js";

export const migrationsDir = fileURLToPath(new URL("../prisma/migrations", import.meta.url));
export const schemaPath = fileURLToPath(new URL("../prisma/schema.prisma", import.meta.url));

export const ADMIN_EMAIL = "root@luna.test";
export const ADMIN_PASSWORD = "a very secret admin passphrase";
export const PASSWORD = "correct horse battery staple";

export type Harness = {
  config: AuthConfig;
  module: AuthModule;
  db: Db;
  database: TestDatabase;
  port: number;
  baseUrl: string;
  /** The client IP this harness' clients present (x-forwarded-for). */
  ip: string;
  auth: Client<typeof AuthService>;
  admin: Client<typeof AuthAdminService>;
  /** Clients presenting another IP. */
  clientsFrom(ip: string): { auth: Client<typeof AuthService>; admin: Client<typeof AuthAdminService> };
  verifier: JwtVerifier;
  redis: Redis;
  nc: NatsConnection;
  jsm: JetStreamManager;
  /** The harness clock: `advance(ms)` moves the service's time. */
  clock: { now(): Date; advance(ms: number): void };
  /** Current value of one of auth's domain counters, e.g. counter("luna_auth_refreshes_total", "replayed"). */
  counter(name: string, outcome: string): Promise<number>;
  /** Headers carrying an access token. */
  bearer(token: string): { headers: Record<string, string> };
  /** Signs in the configured first admin; returns its access token. */
  adminToken(): Promise<string>;
  /** Creates `n` invite codes (as the admin). */
  invites(n?: number, usesPerCode?: number): Promise<string[]>;
  /** Signs up a fresh account with a fresh invite; returns the response. */
  signUp(email?: string, password?: string): ReturnType<Client<typeof AuthService>["signUp"]>;
  close(): Promise<void>;
};

export function randomIp(): string {
  const b = randomBytes(3);
  return `10.${b[0]}.${b[1]}.${b[2]}`;
}

export function uniqueEmail(tag = "user"): string {
  return `${tag}-${randomUUID().slice(0, 8)}@example.com`;
}

/**
 * Starts the module with `env` over test-friendly defaults (argon2 at its floor parameters). `trustedProxies` is the
 * server's setting (default: the kit's, one hop); `revocationCheckMs` the server verifier's revocation cache
 * (LUNA_REVOCATION_CHECK_INTERVAL; default the kit's); `natsUrl` a NATS other than the run's shared one.
 */
export async function startAuth(env: Record<string, string> = {}, opts: { trustedProxies?: TrustedProxies; revocationCheckMs?: number; natsUrl?: string } = {}): Promise<Harness> {
  const servers = testServers();
  const database = await createTestDatabase({ migrationsDir, prefix: "auth" });
  // Failed RPCs are logged at warn by the kit; tests provoke hundreds of them on purpose.
  const log = createLogger({ service: "auth-test", level: "error" });
  const redis = connectRedis(servers.redisUrl, { log, name: "auth-test" });
  // A test that consumes auth's own durables (e.g. the audit events) brings a NATS of its own (`natsUrl`), so
  // harnesses of other files cannot take its messages.
  const nc = await connectNats({ servers: opts.natsUrl ?? servers.natsUrl, name: "auth-test", log });
  await ensureStreams(nc);
  const jsm = await jetstreamManager(nc);
  const config = loadConfig(authConfigSchema, {
    AUTH_ADMIN_EMAIL: ADMIN_EMAIL, AUTH_ADMIN_PASSWORD: ADMIN_PASSWORD, AUTH_KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"), ...env,
  });
  let offset = 0;
  const clock = { now: () => new Date(Date.now() + offset), advance: (ms: number) => void (offset += ms) };
  const registry = new Registry();
  const module = await createAuthModule(config, { log, redis, js: jetstream(nc), databaseUrl: database.url, metrics: { registry } }, { clock: clock.now });

  // The verifier reads the JWKS from the server's own port, known only once it listens.
  const verifierRef: { current?: JwtVerifier } = {};
  const lazyVerifier: JwtVerifier = { verify: (t) => verifierRef.current!.verify(t) };
  const server: LunaServer = createServer({
    routes: (r) => module.routes(r),
    extraHttp: (req, res) => module.http(req, res, { verifier: lazyVerifier }),
    interceptors: [authInterceptor({ verifier: lazyVerifier, rules: module.authRules })],
    log,
    trustedProxies: opts.trustedProxies,
  });
  const { port } = await server.listen(0, "127.0.0.1");
  const baseUrl = `http://127.0.0.1:${port}`;
  const verifier = createJwtVerifier({ jwksUrl: `${baseUrl}/.well-known/jwks.json`, issuer: config.LUNA_JWT_ISSUER, audience: config.LUNA_JWT_AUDIENCE });
  // As every service's runtime does: tokens of revoked users are refused (kit: revocation.ts).
  const revocations = createRevocationList({ redis, checkIntervalMs: opts.revocationCheckMs });
  // API keys as runService verifies them in auth itself: auth's own lookup, cut short by the revocation list.
  verifierRef.current = acceptingApiKeys(revocationCheckingVerifier(verifier, revocations),
    createApiKeyVerifier({ lookup: (key) => module.apiKeyLookup(key), revocations }));
  await module.start();

  const clientsFrom = (ip: string) => {
    const forwarded: Interceptor = (next) => (req) => {
      if (!req.header.has("x-forwarded-for")) req.header.set("x-forwarded-for", ip);
      return next(req);
    };
    const transport = createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [forwarded] });
    return { auth: createClient(AuthService, transport), admin: createClient(AuthAdminService, transport) };
  };
  const ip = randomIp();
  const { auth, admin } = clientsFrom(ip);
  const db = createDb(database.url, { maxConnections: 4 });
  const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
  let adminAccess: string | undefined;

  const h: Harness = {
    config, module, db, database, port, baseUrl, ip, auth, admin, clientsFrom, verifier, redis, nc, jsm, clock, bearer,
    async counter(name, outcome) {
      const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
      return (metric?.values as Array<{ value: number; labels: Record<string, string> }> | undefined)?.find((v) => v.labels.outcome === outcome)?.value ?? 0;
    },
    async adminToken() {
      adminAccess ??= (await auth.signIn({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD })).tokens!.accessToken;
      return adminAccess;
    },
    async invites(n = 1, usesPerCode = 1) {
      const res = await admin.createInvites({ count: n, usesPerCode, note: "test" }, bearer(await h.adminToken()));
      return res.invites.map((i) => i.code);
    },
    async signUp(email = uniqueEmail(), password = PASSWORD) {
      const [code] = await h.invites(1);
      return auth.signUp({ email, password, inviteCode: code!, displayName: "Test User" });
    },
    async close() {
      await server.close();
      await module.stop();
      await db.$disconnect();
      redis.disconnect();
      await nc.close();
      await database.drop();
    },
  };
  return h;
}

/**
 * Waits until the LUNA_EVENTS stream holds a message on `subject` after sequence `afterSeq` that `match`es, and
 * returns it decoded (the outbox relay publishes asynchronously).
 */
export async function waitForEvent<D extends DescMessage>(
  h: Harness, subject: string, schema: D, afterSeq: number, match: (m: MessageShape<D>) => boolean, timeoutMs = 10_000,
): Promise<{ message: MessageShape<D>; msgId: string | undefined; seq: number }> {
  const deadline = Date.now() + timeoutMs;
  let next = afterSeq + 1;
  while (Date.now() < deadline) {
    const last = (await h.jsm.streams.info(EVENTS_STREAM)).state.last_seq;
    for (; next <= last; next++) {
      const stored = await h.jsm.streams.getMessage(EVENTS_STREAM, { seq: next }).catch(() => null);
      if (!stored || stored.subject !== subject) continue;
      const message = fromBinary(schema, stored.data);
      if (match(message)) return { message, msgId: stored.header?.get("Nats-Msg-Id"), seq: stored.seq };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no ${subject} event matching within ${timeoutMs} ms`);
}

export async function streamLastSeq(h: Harness): Promise<number> {
  return (await h.jsm.streams.info(EVENTS_STREAM)).state.last_seq;
}

/** "ok", or the code a call failed with. */
export async function outcome(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return ConnectError.from(e).code;
  }
}

/** The ConnectError of a call that must fail. */
export async function rejection(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}
