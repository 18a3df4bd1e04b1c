// The benchmark's server process, in one of three roles (BENCH_ROLE):
// - "all" (default): chat-router hosted with the real billing and model-registry modules, exactly as the all-in-one
//   process hosts them (`hostModules` + `inProcessClients`);
// - "router": chat-router alone, calling billing and model-registry over gRPC at BENCH_SERVICES_URL with internal
//   JWTs (`networkClients`), as in the cluster (each service its own pod) and `make dev-split`;
// - "services": billing and model-registry hosted together, serving the "router" child over the network.
// Each reports its CPU time on request, so the load generator can divide a process's CPU by the tokens relayed.
// The split pair shares its keys: the "services" child generates them (and signs the users' tokens, as it opens
// their accounts) and the bench hands them to the "router" child in BENCH_KEYS.
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { jetstream } from "@nats-io/jetstream";
import {
  applyMigrations,
  connectNats,
  connectRedis,
  createLogger,
  createMetrics,
  createServiceVerifier,
  ensureStreams,
  generateSigningKey,
  hostModules,
  inProcessClients,
  loadConfig,
  networkClients,
  publicJwkOf,
  signAccessToken,
  toJwks,
  authInterceptor,
  type ServiceModule,
  type ServiceName,
} from "@luna/kit";
import { billingConfigSchema, createBillingModule } from "@luna/billing";
import { configSchema as registryConfigSchema, createModelRegistryModule, migrationsDir as registryMigrations } from "@luna/model-registry";
import { ModelAdminService } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { ModelKind, ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import type { JWK } from "jose";
import { chatRouterConfigSchema, createChatRouterModule, migrationsDir } from "../src/index.js";

const env = process.env;
const role = env.BENCH_ROLE ?? "all";
if (!["all", "router", "services"].includes(role)) throw new Error(`BENCH_ROLE must be all, router or services, not ${role}`);
const hostsChat = role !== "services";
const hostsServices = role !== "router";
const users = Number(env.BENCH_USERS ?? 64);
const log = createLogger({ service: "chat-bench", level: env.LOG_LEVEL ?? "warn" });
const db = (name: string) => `${env.BENCH_PG_BASE}/${name}`;
const billingMigrations = join(dirname(fileURLToPath(import.meta.resolve("@luna/billing"))), "../prisma/migrations");
if (hostsChat) await applyMigrations({ databaseUrl: db("chat"), migrationsDir });
if (hostsServices) {
  await applyMigrations({ databaseUrl: db("billing"), migrationsDir: billingMigrations });
  await applyMigrations({ databaseUrl: db("registry"), migrationsDir: registryMigrations });
}

const redis = connectRedis(env.BENCH_REDIS_URL!, { log, name: `chat-bench-${role}` });
const nc = await connectNats({ servers: env.BENCH_NATS_URL!, name: `chat-bench-${role}`, log });
await ensureStreams(nc);
// Private JWKs: generated here, or the "services" child's (BENCH_KEYS) in the "router" child.
const given = env.BENCH_KEYS ? (JSON.parse(env.BENCH_KEYS) as { user: JWK; internal: JWK }) : undefined;
const userJwk = given?.user ?? (await generateSigningKey({ kid: "bench-user" })).privateJwk;
const internalKey = given?.internal ?? (await generateSigningKey({ kid: "bench-internal" })).privateJwk;
const verifier = createServiceVerifier({
  userIssuer: "luna-auth", audience: "luna", userKeys: { keys: async () => toJwks(publicJwkOf(userJwk)) },
  internalIssuer: "luna-internal", internalPublicKey: publicJwkOf(internalKey),
});
const metrics = createMetrics({ service: "luna", defaultMetrics: false });
const modules: ServiceModule[] = [];
const clientOpts = { internalKey, issuer: "luna-internal", audience: "luna", timeoutMs: 10_000 };
const clients = role === "router"
  ? networkClients({ ...clientOpts, subject: "chat-router", urls: new Map<ServiceName, string>([["billing", env.BENCH_SERVICES_URL!], ["model-registry", env.BENCH_SERVICES_URL!]]) })
  : inProcessClients({ ...clientOpts, modules: () => modules, verifier, subject: "bench" });
const infra = { log, metrics, redis, nats: nc, js: jetstream(nc), clients };
const billing = hostsServices ? await createBillingModule(loadConfig(billingConfigSchema, {
  BILLING_CONSUME_USER_EVENTS: "false", BILLING_INVARIANT_CHECK_INTERVAL: "0ms", BILLING_SIGNUP_CREDITS: "0",
  BILLING_RATE_LIMITS: JSON.stringify({ roles: { user: { rates: { chat: { limit: 1_000_000_000, per: "minute" } }, concurrency: { chat_stream: 1000 } } } }),
}), { ...infra, databaseUrl: db("billing") }) : undefined;
if (billing) modules.push(billing as unknown as ServiceModule);
const registry = hostsServices ? await createModelRegistryModule(loadConfig(registryConfigSchema, { REGISTRY_SEED: "false", REGISTRY_HEALTH_INTERVAL: "5s" }),
  { ...infra, databaseUrl: db("registry") }) : undefined;
if (registry) modules.push(registry as unknown as ServiceModule);
const chat = hostsChat ? await createChatRouterModule(loadConfig(chatRouterConfigSchema, { ...env, CHAT_TITLE_ENABLED: "false", CHAT_CONSUME_USER_EVENTS: "false" }),
  { ...infra, databaseUrl: db("chat") }) : undefined;
if (chat) modules.push(chat as unknown as ServiceModule);
const hosted = await hostModules({ modules, verifier, metrics, log, host: "127.0.0.1", port: 0, adminPort: 0, corsOrigins: ["*"], shutdownGraceMs: 2000, readiness: [] });

// BENCH_COLD_START_S (wake.bench.ts): the models scale to zero with that expected cold start, and the simulator starts
// asleep, so they are STANDBY rather than AVAILABLE once known.
const coldStartSeconds = Number(env.BENCH_COLD_START_S ?? 0);
const scaleToZero = { scaleToZero: coldStartSeconds > 0, coldStartSeconds };
const known = (s: ModelStatus | undefined) => s === ModelStatus.AVAILABLE || (coldStartSeconds > 0 && s === ModelStatus.STANDBY);

const sign = (subject: string, role: "user" | "admin") =>
  signAccessToken({ privateKey: userJwk, kid: "bench-user", issuer: "luna-auth", audience: "luna", subject, role, ttlSeconds: 3600 });
const tokens: string[] = [];
if (registry && billing) {
  // The model, through the registry's admin RPC (in process), served by the simulator.
  const adminToken = await sign("bench-admin", "admin");
  const admin = createClient(ModelAdminService, createRouterTransport((r) => registry.routes(r), {
    router: { interceptors: [authInterceptor({ verifier, rules: registry.authRules })] },
    transport: { interceptors: [(next) => (req) => { req.header.set("authorization", `Bearer ${adminToken}`); return next(req); }] },
  }));
  await admin.upsertModel({ model: {
    id: "bench-model", displayName: "bench", description: "", kind: ModelKind.TEXT, tags: [], contextWindow: 32768, maxOutputTokens: 4096,
    prices: { inputPer1kTokens: 10n, outputPer1kTokens: 10n, perImage: 0n }, sortOrder: 0,
    upstream: { baseUrls: [env.BENCH_SIM_URL!], resolveUrl: "", apiKeyEnv: "", servedModelName: "sim-model" }, ...scaleToZero,
  } });
  // The same model at a model's decoding pace (the latency aims are measured there).
  await admin.upsertModel({ model: {
    id: "bench-model-paced", displayName: "bench (paced)", description: "", kind: ModelKind.TEXT, tags: [], contextWindow: 32768, maxOutputTokens: 4096,
    prices: { inputPer1kTokens: 10n, outputPer1kTokens: 10n, perImage: 0n }, sortOrder: 1,
    upstream: { baseUrls: [env.BENCH_PACED_SIM_URL ?? env.BENCH_SIM_URL!], resolveUrl: "", apiKeyEnv: "", servedModelName: "sim-model" }, ...scaleToZero,
  } });
  for (let i = 0; i < users; i++) {
    const id = `bench-user-${i}`;
    await billing.ledger.store.openAccount(id);
    await billing.ledger.grant({ accountId: id, amount: 1_000_000_000n, reason: "bench", idempotencyKey: "bench" });
    tokens.push(await sign(id, "user"));
  }
}
// chat-router knows the models (from the registry, in process or over gRPC) before the first request.
for (let i = 0; chat && ["bench-model", "bench-model-paced"].some((id) => !known(chat.catalog.getModel(id)?.status)); i++) {
  if (i > 500) throw new Error("the benchmark model never became available");
  await new Promise((r) => setTimeout(r, 20));
}

// CPU profiles of chosen windows (the bench's BENCH_PROFILE_DIR): the inspector's sampling profiler, started and
// stopped around the measured rounds only, so start-up (tsx compiling, migrations) stays out of the picture. The
// session is opened on the first request, so an unprofiled run is not touched.
let profiler: Session | undefined;
const post = <T>(method: string, params?: object) => new Promise<T>((resolve, reject) =>
  profiler!.post(method, params ?? {}, (err, r) => (err ? reject(err) : resolve(r as T))));
const startProfile = async () => {
  if (!profiler) {
    profiler = new Session();
    profiler.connect();
    await post("Profiler.enable");
    await post("Profiler.setSamplingInterval", { interval: 250 });
  }
  await post("Profiler.start");
};

process.send!({ type: "ready", port: hosted.port, tokens, keys: { user: userJwk, internal: internalKey } });
process.on("message", (m: { type: string; file?: string }) => {
  if (m.type === "profile-start") {
    void startProfile().then(() => process.send!({ type: "profile-start" }));
  } else if (m.type === "profile-stop") {
    void post<{ profile: object }>("Profiler.stop").then(({ profile }) => {
      writeFileSync(m.file!, JSON.stringify(profile));
      process.send!({ type: "profile-stop" });
    });
  } else if (m.type === "cpu") {
    const u = process.cpuUsage();
    process.send!({ type: "cpu", micros: u.user + u.system });
  } else if (m.type === "phases") {
    // Server-side time-to-first-token histograms, as sums and counts (the load generator diffs two readings).
    void (async () => {
      const out: Record<string, { sum: number; count: number }> = {};
      for (const name of ["luna_chat_ttft_phase_seconds", "luna_chat_time_to_first_token_seconds"]) {
        const h = await metrics.registry.getSingleMetric(name)?.get();
        // Histogram values carry the series name (_sum, _count, _bucket) beside the labels.
        for (const v of (h?.values ?? []) as Array<{ value: number; labels: Record<string, string | number>; metricName?: string }>) {
          const key = name.includes("phase") ? String(v.labels.phase) : "server_ttft";
          const e = (out[key] ??= { sum: 0, count: 0 });
          if (v.metricName?.endsWith("_sum")) e.sum += v.value;
          else if (v.metricName?.endsWith("_count")) e.count += v.value;
        }
      }
      process.send!({ type: "phases", phases: out });
    })();
  } else if (m.type === "invariants") {
    void billing!.ledger.checkInvariants().then((r) => process.send!({ type: "invariants", ok: r.ok, violations: r.violations.length }));
  } else if (m.type === "stop") {
    void (async () => {
      await hosted.close();
      await nc.drain();
      await redis.quit();
      process.exit(0);
    })();
  }
});
