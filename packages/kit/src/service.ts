// The service runtime: how a Luna service module becomes a running process. A service exports a module factory;
// `runService` hosts one module (its own process, as in the cluster) and `hostModules` hosts several on one port
// (the all-in-one local mode). Both give every module the same interceptors, health, metrics and auth, so a module
// cannot tell which mode it runs in.
import { readFileSync } from "node:fs";
import type { ConnectRouter, Interceptor, Transport } from "@connectrpc/connect";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { JetStreamClient } from "@nats-io/jetstream";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { decodeJwt, type JSONWebKeySet, type JWK } from "jose";
import * as z from "zod";
import { startAdminServer, type AdminServer, type ReadinessCheck } from "./admin.js";
import {
  authInterceptor,
  createInternalTokenMinter,
  createJwtVerifier,
  internalCallInterceptor,
  type JwtVerifier,
  type MethodRules,
  type Principal,
} from "./auth.js";
import { bool, csv, duration, loadConfig, port } from "./config.js";
import { trustedProxiesOf, trustedProxyConfigSchema, type TrustedProxies } from "./client-address.js";
import { createRevocationList, revocationCheckingVerifier, type RevocationList } from "./revocation.js";
import { apiKeyLookupOver, createApiKeyVerifier, looksLikeApiKey, type ApiKeyLookup } from "./api-keys.js";
import { createHealth, healthAuthRules, type HealthServer } from "./health.js";
import { createLogger, type Logger } from "./log.js";
import { applyMigrations } from "./migrate.js";
import { createDirectTransport } from "./direct-transport.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { connectNats, defaultStreams, ensureStreams, natsReady, type StreamSpec } from "./nats.js";
import { connectRedis, redisReady, type Redis } from "./redis.js";
import { createServer, runUntilSignal, type LunaServer, type NodeServerRequest, type NodeServerResponse } from "./server.js";
import { startTracing } from "./tracing.js";

/** The five services; the keys of inter-service transports. */
export type ServiceName = "auth" | "billing" | "model-registry" | "chat-router" | "image-job";
export const SERVICE_NAMES: readonly ServiceName[] = ["auth", "billing", "model-registry", "chat-router", "image-job"];

/** What a service contributes to a server. */
export interface ServiceModule {
  name: string;
  /** Registers this module's Connect services. */
  routes(router: ConnectRouter): void;
  /** Access rule per proto service or method; a method without a rule is denied. */
  authRules: MethodRules;
  /**
   * Plain HTTP routes on the API port (JWKS, signed image URLs, the OpenAI-compatible `/v1/*`); return true when
   * handled. `ctx.verifier` is the host's bearer verifier (access tokens, internal tokens and API keys).
   */
  http?: (req: NodeServerRequest, res: NodeServerResponse, ctx: HttpContext) => boolean;
  /** The auth module serves the user-token JWKS; when hosted in the same process, verification uses it directly. */
  jwks?: () => Promise<JSONWebKeySet>;
  /** The auth module checks API keys itself (other services ask it over AuthInternalService). */
  apiKeyLookup?: ApiKeyLookup;
  readiness?: ReadinessCheck[];
  /** Starts background work (outbox relay, consumers, sweepers). */
  start?(): Promise<void>;
  /** Stops it; called after the server stopped accepting calls. */
  stop?(): Promise<void>;
}

/** What the host hands a module's plain HTTP routes. */
export interface HttpContext {
  verifier: JwtVerifier;
}

/** Connect transports to other services: in-process in the all-in-one mode, gRPC with an internal JWT otherwise. */
export interface ServiceClients {
  transport(service: ServiceName): Transport;
}

/** What the runtime hands a module factory. */
export interface ServiceInfra {
  log: Logger;
  metrics: Metrics;
  redis: Redis;
  nats: NatsConnection;
  js: JetStreamClient;
  /** The module's own database. */
  databaseUrl: string;
  clients: ServiceClients;
}

/** Variables every service reads (documented in the README's configuration table). */
export const runtimeConfigSchema = z.object({
  LUNA_HOST: z.string().default("0.0.0.0"),
  LUNA_PORT: port(8080),
  LUNA_ADMIN_PORT: port(9090),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  DATABASE_URL: z.string().optional(),
  REDIS_URL: z.string().default("redis://127.0.0.1:6379"),
  NATS_URL: z.string().default("nats://127.0.0.1:4222"),
  /**
   * Replicas of Luna's JetStream streams (LUNA_EVENTS, LUNA_IMAGE_JOBS, LUNA_DEADLETTER). 1 for a single server;
   * 3 on a 3-server cluster, or the streams that carry money and jobs live on one server's disk. Every process sets
   * the streams to this at start, so all of them must agree.
   */
  LUNA_NATS_STREAM_REPLICAS: z.coerce.number().int().min(1).max(5).optional().transform((v) => v ?? 1),
  /** Issuer and audience of user access tokens (signed by the auth service). */
  LUNA_JWT_ISSUER: z.string().default("luna-auth"),
  LUNA_JWT_AUDIENCE: z.string().default("luna"),
  LUNA_JWKS_URL: z.string().default("http://auth:8080/.well-known/jwks.json"),
  /** The cluster's internal service key (private Ed25519 JWK, JSON) or a file holding it. */
  LUNA_INTERNAL_KEY: z.string().optional(),
  LUNA_INTERNAL_KEY_FILE: z.string().optional(),
  LUNA_INTERNAL_ISSUER: z.string().default("luna-internal"),
  /** Where other services listen: "billing=http://billing:8080,model-registry=http://model-registry:8080". */
  LUNA_SERVICE_URLS: csv([]),
  LUNA_CALL_TIMEOUT: duration("10s"),
  LUNA_CORS_ORIGINS: csv(["*"]),
  LUNA_MIGRATE_ON_START: bool(true),
  LUNA_SHUTDOWN_GRACE: duration("10s"),
  /** How stale a replica's view of revoked tokens may be (revocation.ts): a revoked token stops within this. */
  LUNA_REVOCATION_CHECK_INTERVAL: duration("2s"),
  /** How long a replica trusts auth's answer for a personal API key (api-keys.ts); revocations cut it short. */
  LUNA_API_KEY_CACHE_TTL: duration("60s"),
  /** LUNA_TRUSTED_PROXY_HOPS (default 1: the gateway) and LUNA_TRUSTED_PROXIES (CIDRs): see client-address.ts. */
  ...trustedProxyConfigSchema.shape,
});
export type RuntimeConfig = z.infer<typeof runtimeConfigSchema>;

/** Luna's streams as this process's runtime configuration wants them (LUNA_NATS_STREAM_REPLICAS). */
export function streamsFor(config: Pick<RuntimeConfig, "LUNA_NATS_STREAM_REPLICAS">): StreamSpec[] {
  return defaultStreams({ replicas: config.LUNA_NATS_STREAM_REPLICAS });
}

/** Reads the internal service key from LUNA_INTERNAL_KEY or LUNA_INTERNAL_KEY_FILE. */
export function loadInternalKey(config: Pick<RuntimeConfig, "LUNA_INTERNAL_KEY" | "LUNA_INTERNAL_KEY_FILE">): JWK {
  const raw = config.LUNA_INTERNAL_KEY ?? (config.LUNA_INTERNAL_KEY_FILE ? readFileSync(config.LUNA_INTERNAL_KEY_FILE, "utf8") : undefined);
  if (raw === undefined) throw new Error("LUNA_INTERNAL_KEY: required but not set (or set LUNA_INTERNAL_KEY_FILE)");
  let jwk: JWK;
  try {
    jwk = JSON.parse(raw) as JWK;
  } catch {
    throw new Error("LUNA_INTERNAL_KEY: expected a private JWK as JSON");
  }
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.d !== "string" || typeof jwk.kid !== "string") {
    throw new Error("LUNA_INTERNAL_KEY: expected an Ed25519 private JWK with a kid");
  }
  return jwk;
}

/** The public half of a private JWK, for verification. */
export function publicJwkOf(jwk: JWK): JWK {
  const { d: _d, ...pub } = jwk;
  return { ...pub, use: "sig" };
}

/**
 * Verifies both kinds of bearer token a service sees: user tokens (auth's keys, `LUNA_JWT_ISSUER`) and internal
 * tokens (the internal key, `LUNA_INTERNAL_ISSUER`). The issuer picks the key set; a token that claims the
 * `internal` role is accepted only when the internal key signed it, so no user token can pass as internal.
 */
export function createServiceVerifier(opts: {
  userIssuer: string;
  audience: string;
  userKeys: { jwksUrl: string } | { keys: () => Promise<JSONWebKeySet> };
  internalIssuer: string;
  internalPublicKey: JWK;
  /** Refuses user tokens issued before their user's revocation (see revocation.ts); every service passes it. */
  revocations?: Pick<RevocationList, "notBefore">;
  /**
   * Verifies personal API keys (`luna_sk_...`, see api-keys.ts; it applies the revocation list itself). Without it an
   * API key is refused.
   */
  apiKeys?: JwtVerifier;
}): JwtVerifier {
  const user = createJwtVerifier({ issuer: opts.userIssuer, audience: opts.audience, ...opts.userKeys });
  const internal = createJwtVerifier({ issuer: opts.internalIssuer, audience: opts.audience, keys: { keys: [opts.internalPublicKey] } });
  const verifier = cachingVerifier({
    async verify(token: string): Promise<Principal> {
      let iss: unknown;
      try {
        iss = decodeJwt(token).iss;
      } catch {
        iss = undefined;
      }
      if (iss === opts.internalIssuer) {
        const p = await internal.verify(token);
        if (p.role !== "internal") throw new ConnectError("invalid token: the internal key only signs internal tokens", Code.Unauthenticated);
        return p;
      }
      const p = await user.verify(token);
      if (p.role === "internal") throw new ConnectError("invalid token: internal tokens come from the internal key", Code.Unauthenticated);
      return p;
    },
  });
  // Outside the cache: a cached token is still checked against revocations on every call.
  const tokens = opts.revocations ? revocationCheckingVerifier(verifier, opts.revocations) : verifier;
  return acceptingApiKeys(tokens, opts.apiKeys);
}

/** Sends `luna_sk_` bearer values to `apiKeys` (refused when undefined) and everything else to `tokens`. */
export function acceptingApiKeys(tokens: JwtVerifier, apiKeys: JwtVerifier | undefined): JwtVerifier {
  return {
    verify(token) {
      if (!looksLikeApiKey(token)) return tokens.verify(token);
      if (!apiKeys) return Promise.reject(new ConnectError("API keys are not accepted here", Code.Unauthenticated));
      return apiKeys.verify(token);
    },
  };
}

/**
 * Remembers verified tokens until they expire, so a token presented on every call (a client's access token, the
 * internal token of in-process calls) costs one signature check, not one per call. Bounded; the oldest entries go
 * first. A signing key withdrawn from the JWKS stops being accepted for new tokens at once and for cached ones at
 * their expiry (access tokens live minutes).
 */
export function cachingVerifier(verifier: JwtVerifier, opts: { maxEntries?: number } = {}): JwtVerifier {
  const max = opts.maxEntries ?? 10_000;
  const cache = new Map<string, { principal: Principal; expiresAtMs: number }>();
  return {
    async verify(token) {
      const hit = cache.get(token);
      if (hit) {
        if (Date.now() < hit.expiresAtMs) return hit.principal;
        cache.delete(token);
      }
      const principal = await verifier.verify(token);
      const exp = decodeJwt(token).exp;
      if (typeof exp === "number") {
        if (cache.size >= max) cache.delete(cache.keys().next().value!);
        cache.set(token, { principal, expiresAtMs: exp * 1000 });
      }
      return principal;
    },
  };
}

/** Parses "billing=http://billing:8080,..." into a map, rejecting unknown service names. */
export function parseServiceUrls(entries: string[]): Map<ServiceName, string> {
  const map = new Map<ServiceName, string>();
  for (const entry of entries) {
    const eq = entry.indexOf("=");
    const name = entry.slice(0, eq).trim() as ServiceName;
    const url = entry.slice(eq + 1).trim();
    if (eq < 1 || !SERVICE_NAMES.includes(name) || !/^https?:\/\//.test(url)) {
      throw new Error(`LUNA_SERVICE_URLS: expected name=http://host:port with name one of ${SERVICE_NAMES.join(", ")}, got "${entry}"`);
    }
    map.set(name, url);
  }
  return map;
}

/** Network clients: gRPC over HTTP/2 with an internal JWT and a deadline on every call. */
export function networkClients(opts: { urls: Map<ServiceName, string>; internalKey: JWK; issuer: string; audience: string;
  subject: string; timeoutMs: number }): ServiceClients {
  const minter = createInternalTokenMinter({ privateKey: opts.internalKey, kid: opts.internalKey.kid!, issuer: opts.issuer,
    audience: opts.audience, subject: opts.subject });
  const cache = new Map<ServiceName, Transport>();
  return {
    transport(service) {
      let t = cache.get(service);
      if (!t) {
        const baseUrl = opts.urls.get(service) ?? `http://${service}:8080`;
        t = createGrpcTransport({ baseUrl, interceptors: [internalCallInterceptor(minter)], defaultTimeoutMs: opts.timeoutMs });
        cache.set(service, t);
      }
      return t;
    },
  };
}

/**
 * In-process clients for modules hosted together: a call is a direct call of the target module's implementation
 * ({@link createDirectTransport}: the same access rules as the network path, for an internal principal named
 * `subject`; copies of the messages; no serialisation). Client- and bidi-streaming methods go through the module's
 * routes with the auth interceptor and an internal token instead, never leaving the process either.
 */
export function inProcessClients(opts: { modules: () => ServiceModule[]; verifier: JwtVerifier; internalKey: JWK;
  issuer: string; audience: string; subject: string; timeoutMs: number }): ServiceClients {
  const minter = createInternalTokenMinter({ privateKey: opts.internalKey, kid: opts.internalKey.kid!, issuer: opts.issuer,
    audience: opts.audience, subject: opts.subject });
  const principal: Principal = { userId: opts.subject, role: "internal", tokenId: "in-process" };
  const cache = new Map<ServiceName, Transport>();
  // Resolved on first call, not on creation: modules are built one after another and may hold a transport to a
  // module created after them (the image worker and image-job).
  const resolve = (service: ServiceName): Transport => {
    let t = cache.get(service);
    if (!t) {
      const mod = opts.modules().find((m) => m.name === service);
      if (!mod) throw new ConnectError(`service ${service} is not hosted in this process`, Code.Unimplemented);
      let routed: Transport | undefined;
      t = createDirectTransport({
        routes: (router) => mod.routes(router), rules: mod.authRules, principal, defaultTimeoutMs: opts.timeoutMs,
        fallback: () => (routed ??= createRouterTransport((router) => mod.routes(router), {
          transport: { interceptors: [internalCallInterceptor(minter)], defaultTimeoutMs: opts.timeoutMs },
          router: { interceptors: [authInterceptor({ verifier: opts.verifier, rules: mod.authRules })] },
        })),
      });
      cache.set(service, t);
    }
    return t;
  };
  return {
    transport(service) {
      return {
        unary: (...args) => resolve(service).unary(...args),
        stream: (...args) => resolve(service).stream(...args),
      };
    },
  };
}

/** A server hosting one or more modules, with its admin port. */
export interface HostedModules {
  port: number;
  adminPort: number;
  health: HealthServer;
  /** Stop order: not ready → stop accepting and drain calls → stop modules' workers → close admin. */
  close(): Promise<void>;
}

/** Hosts modules on one API port (plus the admin port): health, metrics, auth, CORS, plain HTTP routes. */
export async function hostModules(opts: {
  modules: ServiceModule[];
  verifier: JwtVerifier;
  metrics: Metrics;
  log: Logger;
  host: string;
  port: number;
  adminPort: number;
  corsOrigins: string[];
  shutdownGraceMs: number;
  readiness: ReadinessCheck[];
  /** Extra plain HTTP handler tried after the modules' ones (the all-in-one serves the web client there). */
  http?: (req: NodeServerRequest, res: NodeServerResponse) => boolean;
  /** Extra interceptors, innermost (e.g. a gateway-equivalent rate limit in the all-in-one mode). */
  interceptors?: Interceptor[];
  /** Proxies in front of the port (see createServer); the runtime passes `trustedProxiesOf(runtime)`. */
  trustedProxies?: TrustedProxies;
  /**
   * Serve only what the gateway would route (the all-in-one mode): proto services whose rule is `internal`, and
   * Envoy's rate limit service, are not registered on the port at all (in-process clients reach them directly).
   */
  publicOnly?: boolean;
}): Promise<HostedModules> {
  const rules: MethodRules = { ...healthAuthRules };
  for (const m of opts.modules) {
    for (const [k, v] of Object.entries(m.authRules)) {
      if (rules[k] !== undefined && rules[k] !== v) throw new Error(`conflicting auth rules for ${k}`);
      rules[k] = v;
    }
  }
  const health = createHealth({ services: opts.modules.map((m) => m.name) });
  const httpHandlers = [...opts.modules.flatMap((m) => (m.http ? [m.http] : [])), ...(opts.http ? [opts.http] : [])];
  const httpContext: HttpContext = { verifier: opts.verifier };
  const server: LunaServer = createServer({
    routes(router) {
      health.routes(router);
      const target = opts.publicOnly ? publicRoutesOnly(router, rules) : router;
      for (const m of opts.modules) m.routes(target);
    },
    interceptors: [opts.metrics.interceptor, authInterceptor({ verifier: opts.verifier, rules }), ...(opts.interceptors ?? [])],
    cors: { allowedOrigins: opts.corsOrigins },
    extraHttp: (req, res) => httpHandlers.some((h) => h(req, res, httpContext)),
    log: opts.log,
    shutdownGraceMs: opts.shutdownGraceMs,
    metrics: opts.metrics,
    trustedProxies: opts.trustedProxies,
  });
  const admin: AdminServer = await startAdminServer({
    port: opts.adminPort,
    host: opts.host,
    registry: opts.metrics.registry,
    readiness: [...opts.readiness, ...opts.modules.flatMap((m) => m.readiness ?? [])],
  });
  for (const m of opts.modules) await m.start?.();
  const { port } = await server.listen(opts.port, opts.host);
  return {
    port,
    adminPort: admin.port,
    health,
    async close() {
      admin.setReady(false);
      health.shutdown();
      await server.close();
      for (const m of [...opts.modules].reverse()) await m.stop?.();
      await admin.close();
    },
  };
}

/** Services never exposed by the gateway besides the `internal` ones: Envoy talks to its rate limiter directly. */
const GATEWAY_ONLY_SERVICES = new Set(["envoy.service.ratelimit.v3.RateLimitService"]);

/** A router that silently drops registrations of internal-only services. */
function publicRoutesOnly(router: ConnectRouter, rules: MethodRules): ConnectRouter {
  const hidden = (typeName: string): boolean => rules[typeName] === "internal" || GATEWAY_ONLY_SERVICES.has(typeName);
  return new Proxy(router, {
    get(target, prop, receiver) {
      if (prop === "service") {
        return (desc: { typeName: string }, ...rest: unknown[]) =>
          hidden(desc.typeName) ? receiver : (target.service as (...a: unknown[]) => ConnectRouter)(desc, ...rest);
      }
      if (prop === "rpc") {
        return (desc: { parent: { typeName: string } }, ...rest: unknown[]) =>
          hidden(desc.parent.typeName) ? receiver : (target.rpc as (...a: unknown[]) => ConnectRouter)(desc, ...rest);
      }
      return Reflect.get(target, prop, receiver);
    },
  });
}

/** Options for {@link runService}. */
export interface RunServiceOptions<S extends z.ZodObject, C = z.infer<S>> {
  name: ServiceName;
  configSchema: S;
  create(config: C, infra: ServiceInfra): Promise<ServiceModule>;
  /** The service's Prisma migrations; applied on start unless LUNA_MIGRATE_ON_START=false. */
  migrationsDir?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs one service as its own process: reads and validates config, starts tracing, applies migrations, connects
 * Redis and NATS, builds the module, serves it, and shuts down in order on SIGTERM.
 */
export async function runService<S extends z.ZodObject>(opts: RunServiceOptions<S>): Promise<void> {
  const env = opts.env ?? process.env;
  const runtime = loadConfig(runtimeConfigSchema, env);
  const config = loadConfig(opts.configSchema, env);
  const log = createLogger({ service: opts.name, level: runtime.LOG_LEVEL });
  const tracing = await startTracing(opts.name);
  try {
    const databaseUrl = runtime.DATABASE_URL ?? "";
    if (opts.migrationsDir) {
      if (!databaseUrl) throw new Error("DATABASE_URL: required but not set");
      if (runtime.LUNA_MIGRATE_ON_START) {
        const { applied } = await applyMigrations({ databaseUrl, migrationsDir: opts.migrationsDir, log });
        log.info({ applied }, applied.length ? "migrations applied" : "database schema up to date");
      }
    }
    const internalKey = loadInternalKey(runtime);
    const redis = connectRedis(runtime.REDIS_URL, { log, name: opts.name });
    const nats = await connectNats({ servers: runtime.NATS_URL, name: opts.name, log });
    await ensureStreams(nats, streamsFor(runtime));
    const metrics = createMetrics({ service: opts.name });
    const clients = networkClients({ urls: parseServiceUrls(runtime.LUNA_SERVICE_URLS), internalKey,
      issuer: runtime.LUNA_INTERNAL_ISSUER, audience: runtime.LUNA_JWT_AUDIENCE, subject: opts.name,
      timeoutMs: runtime.LUNA_CALL_TIMEOUT });
    const hostedModule: { current?: ServiceModule } = {};
    const revocations = createRevocationList({ redis, checkIntervalMs: runtime.LUNA_REVOCATION_CHECK_INTERVAL, log });
    const authLookup = apiKeyLookupOver(clients.transport("auth"));
    const verifier = createServiceVerifier({
      userIssuer: runtime.LUNA_JWT_ISSUER,
      audience: runtime.LUNA_JWT_AUDIENCE,
      // The auth service verifies its own tokens from its key store; everyone else fetches auth's JWKS.
      userKeys: opts.name === "auth" ? { keys: () => hostedModule.current!.jwks!() } : { jwksUrl: runtime.LUNA_JWKS_URL },
      internalIssuer: runtime.LUNA_INTERNAL_ISSUER,
      internalPublicKey: publicJwkOf(internalKey),
      revocations,
      apiKeys: createApiKeyVerifier({
        // Auth answers from its own database; everyone else asks auth.
        lookup: opts.name === "auth" ? (key) => hostedModule.current!.apiKeyLookup!(key) : authLookup,
        revocations,
        cacheTtlMs: runtime.LUNA_API_KEY_CACHE_TTL,
      }),
    });
    const mod = await opts.create(config, { log, metrics, redis, nats, js: jetstream(nats), databaseUrl, clients });
    hostedModule.current = mod;
    const hosted = await hostModules({
      modules: [mod], verifier, metrics, log, host: runtime.LUNA_HOST, port: runtime.LUNA_PORT,
      adminPort: runtime.LUNA_ADMIN_PORT, corsOrigins: runtime.LUNA_CORS_ORIGINS, shutdownGraceMs: runtime.LUNA_SHUTDOWN_GRACE,
      trustedProxies: trustedProxiesOf(runtime),
      readiness: [
        { name: "redis", check: () => redisReady(redis) },
        { name: "nats", check: () => natsReady(nats) },
      ],
    });
    log.info({ port: hosted.port, admin_port: hosted.adminPort }, `${opts.name} listening`);
    runUntilSignal({
      log,
      shutdown: [
        { name: "server and workers", run: () => hosted.close() },
        { name: "nats", run: () => nats.drain() },
        { name: "redis", run: async () => void (await redis.quit()) },
        { name: "telemetry", run: () => tracing.shutdown() },
      ],
    });
  } catch (err) {
    log.fatal({ err }, `${opts.name} failed to start`);
    await tracing.shutdown();
    process.exitCode = 1;
    throw err;
  }
}
