// Integration harness: the real billing and model-registry modules hosted with chat-router (as the all-in-one process
// does it: `hostModules` + `inProcessClients`), on real Postgres and Redis from the test run and a NATS of the test
// file's own, with vLLM simulators as upstreams. Clients talk to the hosted port over gRPC (HTTP/2), with user
// tokens signed by a test key.
import type { ChildProcess } from "node:child_process";
import { createServer as createHttpServer } from "node:http";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  connectNats,
  connectRedis,
  createLogger,
  createMetrics,
  createApiKeyVerifier,
  createRevocationList,
  createServiceVerifier,
  ensureStreams,
  generateSigningKey,
  hostModules,
  inProcessClients,
  loadConfig,
  publicJwkOf,
  signAccessToken,
  toJwks,
  type ApiKeyLookup,
  type HostedModules,
  type Logger,
  type Redis,
  type ServiceInfra,
  type ServiceModule,
  type SigningKey,
} from "@luna/kit";
import { createTestDatabase, spawnProgram, startDedicatedNats, testServers, type TestDatabase } from "@luna/kit/testing";
import { billingConfigSchema, createBillingModule, type BillingModule } from "@luna/billing";
import { configSchema as registryConfigSchema, createModelRegistryModule, migrationsDir as registryMigrations } from "@luna/model-registry";
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import { ModelAdminService } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { ModelKind, ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import type { ChatEvent } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import type { JWK } from "jose";
import pg from "pg";
import { expect } from "vitest";
import { chatRouterConfigSchema, createChatRouterModule, migrationsDir, type ChatRouterModule } from "../src/index.js";

const CHAT_MAIN = fileURLToPath(new URL("../src/main.ts", import.meta.url));
const REPO_ROOT = fileURLToPath(new URL("../../..", import.meta.url));

async function freePort(): Promise<number> {
  const srv = createNetServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

const billingMigrations = join(dirname(fileURLToPath(import.meta.resolve("@luna/billing"))), "../prisma/migrations");

export const ISSUER = "luna-auth";
export const INTERNAL_ISSUER = "luna-internal";
export const AUDIENCE = "luna";

/** Defaults for tests: fast timeouts, no background titles unless asked, exact sim template overheads. */
export const TEST_CHAT_ENV: Record<string, string> = {
  CHAT_TITLE_ENABLED: "false",
  CHAT_CONSUME_USER_EVENTS: "false",
  CHAT_SWEEP_INTERVAL: "0ms",
  CHAT_CHECKPOINT_INTERVAL: "200ms",
  CHAT_DISCONNECT_GRACE: "0ms",
  CHAT_BREAKER_COOLDOWN: "60s",
  CHAT_UPSTREAM_CONNECT_TIMEOUT: "3s",
  CHAT_FIRST_TOKEN_TIMEOUT: "3s",
  CHAT_IDLE_TIMEOUT: "3s",
  CHAT_RESUME_SNAPSHOT_TIMEOUT: "300ms",
  // The simulator's ChatML template: 5 tokens per message, 3 for the generation prompt.
  CHAT_MESSAGE_OVERHEAD_TOKENS: "5",
  CHAT_PROMPT_OVERHEAD_TOKENS: "3",
};

export interface ChatReplica {
  module: ChatRouterModule;
  hosted: HostedModules;
  nats: NatsConnection;
  client: (token: string) => Client<typeof ChatService>;
  transport: Transport;
  stop(): Promise<void>;
}

export interface Platform {
  billing: BillingModule;
  chat: ChatReplica;
  admin: Client<typeof ModelAdminService>;
  natsUrl: string;
  dbs: { chat: TestDatabase; billing: TestDatabase; registry: TestDatabase };
  log: Logger;
  userKey: SigningKey;
  /** Another chat-router "process" on the same databases and NATS (own server, NATS connection, metrics). */
  startReplica(env?: Record<string, string>): Promise<ChatReplica>;
  /**
   * chat-router as a real child process (`src/main.ts`) on the same database, NATS and Redis, calling this
   * platform's billing and model-registry over the network. For crash tests (SIGKILL).
   */
  spawnChatRouter(env?: Record<string, string>): Promise<{ child: ChildProcess; client(token: string): Client<typeof ChatService> }>;
  /** A user token (and the user's funded billing account). */
  user(credits: bigint, id?: string): Promise<{ id: string; token: string; chat: Client<typeof ChatService> }>;
  /** Registers a text model served by the given simulator URLs and waits until chat-router sees it available. */
  addModel(m: { id: string; baseUrls: string[]; contextWindow: number; maxOutputTokens: number; inputPer1k?: bigint; outputPer1k?: bigint; servedModelName?: string }): Promise<void>;
  available(userId: string): Promise<bigint>;
  assertInvariants(): Promise<void>;
  stop(): Promise<void>;
}

let userCounter = 0;

export interface PlatformOptions {
  chatEnv?: Record<string, string>;
  /** Extra model-registry settings (e.g. a slow REGISTRY_HEALTH_INTERVAL, so only chat-router's own probes see a wake). */
  registryEnv?: Record<string, string>;
  /** Billing's limits for role "user" (default: generous, so only tests of limits hit them). */
  limits?: { chatPerMinute?: number; chatStreams?: number };
  /** Accept personal API keys, looked up here (auth's part; the kit's key verifier and revocation list are real). */
  apiKeyLookup?: ApiKeyLookup;
  /** Sees every unary call chat-router makes in process (`<service type>/<method>`), e.g. to count billing calls. */
  onCall?: (procedure: string) => void;
}

export async function startPlatform(opts: PlatformOptions = {}): Promise<Platform> {
  const log = createLogger({ service: "chat-router-test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
  const servers = testServers();
  const nats = await startDedicatedNats();
  const [chatDb, billingDb, registryDb] = await Promise.all([
    createTestDatabase({ migrationsDir, prefix: "chat" }),
    createTestDatabase({ migrationsDir: billingMigrations, prefix: "chat_billing" }),
    createTestDatabase({ migrationsDir: registryMigrations, prefix: "chat_registry" }),
  ]);
  const redis: Redis = connectRedis(servers.redisUrl, { log, name: "chat-test" });
  const userKey = await generateSigningKey({ kid: "user-test" });
  const internalKey: JWK = (await generateSigningKey({ kid: "internal-test" })).privateJwk;
  const revocations = createRevocationList({ redis, checkIntervalMs: 200 });
  const verifier = createServiceVerifier({
    userIssuer: ISSUER, audience: AUDIENCE, userKeys: { keys: async () => toJwks(userKey) },
    internalIssuer: INTERNAL_ISSUER, internalPublicKey: publicJwkOf(internalKey), revocations,
    apiKeys: opts.apiKeyLookup ? createApiKeyVerifier({ lookup: opts.apiKeyLookup, revocations }) : undefined,
  });
  const cleanups: Array<() => Promise<unknown>> = [];

  const nc = await connectNats({ servers: nats.url, name: "chat-test-a", log });
  await ensureStreams(nc);
  const metrics = createMetrics({ service: "luna", defaultMetrics: false });
  const modules: ServiceModule[] = [];
  const clientsFor = (mods: () => ServiceModule[]) => inProcessClients({ modules: mods, verifier, internalKey, issuer: INTERNAL_ISSUER,
    audience: AUDIENCE, subject: "chat-test", timeoutMs: 10_000 });
  const clients = clientsFor(() => modules);
  // Billing's limits are shared through Redis with other test files: a key prefix is not configurable, so users
  // are unique per run (see user()).
  const billing = await createBillingModule(
    loadConfig(billingConfigSchema, {
      BILLING_CONSUME_USER_EVENTS: "false", BILLING_INVARIANT_CHECK_INTERVAL: "0ms", BILLING_SIGNUP_CREDITS: "0",
      BILLING_RATE_LIMITS: JSON.stringify({ roles: { user: {
        rates: { chat: { limit: opts.limits?.chatPerMinute ?? 1000, per: "minute" } },
        concurrency: { chat_stream: opts.limits?.chatStreams ?? 50 },
      } } }),
    }),
    { log, metrics, redis, js: jetstream(nc), databaseUrl: billingDb.url },
  );
  modules.push(billing as unknown as ServiceModule);
  const registry = await createModelRegistryModule(
    loadConfig(registryConfigSchema, { REGISTRY_SEED: "false", REGISTRY_HEALTH_INTERVAL: "250ms", REGISTRY_HEALTH_FAILURES: "1", ...opts.registryEnv }),
    { log, metrics, js: jetstream(nc), databaseUrl: registryDb.url },
  );
  modules.push(registry as unknown as ServiceModule);

  async function startChat(conn: NatsConnection, env: Record<string, string>, hostedWith: ServiceModule[], name: string): Promise<ChatReplica> {
    const m = name === "a" ? metrics : createMetrics({ service: "luna", defaultMetrics: false });
    const mods: ServiceModule[] = [];
    const c = name === "a" ? clients : clientsFor(() => [billing as unknown as ServiceModule, registry as unknown as ServiceModule, ...mods]);
    const onCall = opts.onCall;
    const watched: ServiceInfra["clients"] = onCall ? {
      transport(service) {
        const t = c.transport(service);
        return { stream: t.stream, unary: (method, ...rest) => (onCall(`${method.parent.typeName}/${method.name}`), t.unary(method, ...rest)) };
      },
    } : c;
    const infra: ServiceInfra = { log: log.child({ replica: name }), metrics: m, redis, nats: conn, js: jetstream(conn), databaseUrl: chatDb.url, clients: watched };
    const module = await createChatRouterModule(loadConfig(chatRouterConfigSchema, { ...TEST_CHAT_ENV, ...opts.chatEnv, ...env }), infra);
    mods.push(module as unknown as ServiceModule);
    if (name === "a") modules.push(module as unknown as ServiceModule);
    const hosted = await hostModules({
      modules: [...hostedWith, module as unknown as ServiceModule], verifier, metrics: m, log, host: "127.0.0.1", port: 0, adminPort: 0,
      corsOrigins: ["*"], shutdownGraceMs: 2000, readiness: [],
    });
    const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${hosted.port}` });
    let stopped = false;
    const replica: ChatReplica = {
      module, hosted, nats: conn, transport,
      client: (token) => createClient(ChatService, createGrpcTransport({
        baseUrl: `http://127.0.0.1:${hosted.port}`,
        interceptors: [(next) => (req) => { req.header.set("authorization", `Bearer ${token}`); return next(req); }],
      })),
      async stop() {
        if (stopped) return;
        stopped = true;
        await hosted.close();
        if (conn !== nc) await conn.drain().catch(() => undefined);
      },
    };
    return replica;
  }

  const chat = await startChat(nc, {}, [billing as unknown as ServiceModule, registry as unknown as ServiceModule], "a");
  const replicas: ChatReplica[] = [chat];
  const adminToken = await signAccessToken({ privateKey: userKey.privateKey, kid: userKey.kid, issuer: ISSUER, audience: AUDIENCE, subject: "admin-1", role: "admin", ttlSeconds: 3600 });
  const admin = createClient(ModelAdminService, createGrpcTransport({
    baseUrl: `http://127.0.0.1:${chat.hosted.port}`,
    interceptors: [(next) => (req) => { req.header.set("authorization", `Bearer ${adminToken}`); return next(req); }],
  }));

  const platform: Platform = {
    billing, chat, admin, natsUrl: nats.url, dbs: { chat: chatDb, billing: billingDb, registry: registryDb }, log, userKey,
    async startReplica(env = {}) {
      const conn = await connectNats({ servers: nats.url, name: `chat-test-${replicas.length}`, log });
      const r = await startChat(conn, env, [], String.fromCharCode(97 + replicas.length));
      replicas.push(r);
      await r.module.catalog.whenLoaded();
      return r;
    },
    async spawnChatRouter(env = {}) {
      // The child verifies user tokens from a JWKS URL, as a deployed service does.
      const jwks = createHttpServer((_req, res) => {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify(toJwks(userKey)));
      });
      await new Promise<void>((r) => jwks.listen(0, "127.0.0.1", r));
      cleanups.push(() => new Promise<void>((r) => jwks.close(() => r())));
      const port = await freePort();
      const childEnv = {
        ...process.env, ...TEST_CHAT_ENV, ...opts.chatEnv,
        DATABASE_URL: chatDb.url, LUNA_MIGRATE_ON_START: "false", NATS_URL: nats.url, REDIS_URL: servers.redisUrl,
        LUNA_SERVICE_URLS: `billing=http://127.0.0.1:${chat.hosted.port},model-registry=http://127.0.0.1:${chat.hosted.port}`,
        LUNA_INTERNAL_KEY: JSON.stringify(internalKey), LUNA_INTERNAL_ISSUER: INTERNAL_ISSUER, LUNA_JWT_ISSUER: ISSUER, LUNA_JWT_AUDIENCE: AUDIENCE,
        LUNA_JWKS_URL: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`,
        LUNA_HOST: "127.0.0.1", LUNA_PORT: String(port), LUNA_ADMIN_PORT: String(await freePort()), LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "info",
        ...env,
      };
      const child = await spawnProgram({ main: CHAT_MAIN, cwd: REPO_ROOT, env: childEnv, readyLine: "chat-router listening", name: "chat-router",
        onSpawn: (c) => cleanups.push(async () => void (c.exitCode === null && c.signalCode === null && c.kill("SIGKILL"))) });
      const client = (token: string) => createClient(ChatService, createGrpcTransport({
        baseUrl: `http://127.0.0.1:${port}`,
        interceptors: [(next) => (req) => { req.header.set("authorization", `Bearer ${token}`); return next(req); }],
      }));
      return { child, client };
    },
    async user(credits, id) {
      const userId = id ?? `u${process.pid}-${Date.now().toString(36)}-${++userCounter}`;
      await billing.ledger.store.openAccount(userId);
      if (credits > 0n) await billing.ledger.grant({ accountId: userId, amount: credits, reason: "test credits", idempotencyKey: `test-${userId}` });
      const token = await signAccessToken({ privateKey: userKey.privateKey, kid: userKey.kid, issuer: ISSUER, audience: AUDIENCE, subject: userId, role: "user", ttlSeconds: 3600 });
      return { id: userId, token, chat: chat.client(token) };
    },
    async addModel(m) {
      await admin.upsertModel({
        model: {
          id: m.id, displayName: m.id, description: "", kind: ModelKind.TEXT, tags: [], contextWindow: m.contextWindow, maxOutputTokens: m.maxOutputTokens,
          prices: { inputPer1kTokens: m.inputPer1k ?? 10n, outputPer1kTokens: m.outputPer1k ?? 10n, perImage: 0n }, sortOrder: 0,
          upstream: { baseUrls: m.baseUrls, resolveUrl: "", apiKeyEnv: "", servedModelName: m.servedModelName ?? "sim-model" },
        },
      });
      await waitFor(() => replicas.every((r) => r.module.catalog.getModel(m.id)?.status === ModelStatus.AVAILABLE), `model ${m.id} available`);
    },
    async available(userId) {
      const a = await billing.ledger.store.getAccount(userId);
      return a ? a.available : 0n;
    },
    async assertInvariants() {
      const r = await billing.ledger.checkInvariants();
      expect(r.violations).toEqual([]);
      expect(r.ok).toBe(true);
    },
    async stop() {
      for (const r of replicas.slice(1).reverse()) await r.stop();
      await chat.stop();
      for (const c of cleanups.reverse()) await c();
      await nc.drain().catch(() => undefined);
      await redis.quit().catch(() => undefined);
      await nats.dispose();
      await Promise.all([chatDb.drop(), billingDb.drop(), registryDb.drop()]);
    },
  };
  return platform;
}

/** The `streamed_by` of a message row: the id of the replica (LiveHub) that streamed the reply. */
export async function streamedBy(platform: Platform, messageId: string): Promise<string> {
  const db = new pg.Client({ connectionString: platform.dbs.chat.url });
  await db.connect();
  try {
    const r = await db.query<{ streamed_by: string }>("SELECT streamed_by FROM messages WHERE id = $1", [messageId]);
    return r.rows[0]!.streamed_by;
  } finally {
    await db.end();
  }
}

/** Polls `cond` until true (or fails after `timeoutMs`). */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Collects a reply stream into its parts. */
export interface Collected {
  started?: NonNullable<Extract<ChatEvent["event"], { case: "started" }>["value"]>;
  deltas: Array<{ text: string; offset: bigint }>;
  text: string;
  finished?: Extract<ChatEvent["event"], { case: "finished" }>["value"];
  error?: Extract<ChatEvent["event"], { case: "error" }>["value"];
  /** `waiting` events (the model was warming up), with when each arrived (Date.now()). */
  waiting: Array<Extract<ChatEvent["event"], { case: "waiting" }>["value"] & { at: number }>;
  /** Date.now() when the first delta arrived. */
  firstDeltaAt?: number;
  order: string[];
}

export async function collect(stream: AsyncIterable<{ event?: ChatEvent }>, onEvent?: (c: Collected) => void | Promise<void>): Promise<Collected> {
  const c: Collected = { deltas: [], text: "", order: [], waiting: [] };
  for await (const res of stream) {
    const ev = res.event?.event;
    if (!ev || ev.case === undefined) continue;
    c.order.push(ev.case);
    if (ev.case === "started") c.started = ev.value;
    else if (ev.case === "waiting") c.waiting.push({ ...ev.value, at: Date.now() });
    else if (ev.case === "delta") {
      c.firstDeltaAt ??= Date.now();
      c.deltas.push({ text: ev.value.text, offset: ev.value.offset });
      c.text += ev.value.text;
    } else if (ev.case === "finished") c.finished = ev.value;
    else if (ev.case === "error") c.error = ev.value;
    await onEvent?.(c);
  }
  return c;
}
