// The benchmark's server process: chat-router hosted with the real billing and model-registry modules, exactly as
// the all-in-one process hosts them (`hostModules` + `inProcessClients`). Reports its CPU time on request, so the
// load generator can divide chat-router's (and its in-process billing calls') CPU by the tokens relayed.
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
  publicJwkOf,
  signAccessToken,
  toJwks,
  authInterceptor,
  type ServiceModule,
} from "@luna/kit";
import { billingConfigSchema, createBillingModule } from "@luna/billing";
import { configSchema as registryConfigSchema, createModelRegistryModule, migrationsDir as registryMigrations } from "@luna/model-registry";
import { ModelAdminService } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { ModelKind, ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { chatRouterConfigSchema, createChatRouterModule, migrationsDir } from "../src/index.js";

const env = process.env;
const users = Number(env.BENCH_USERS ?? 64);
const log = createLogger({ service: "chat-bench", level: env.LOG_LEVEL ?? "warn" });
const db = (name: string) => `${env.BENCH_PG_BASE}/${name}`;
const billingMigrations = join(dirname(fileURLToPath(import.meta.resolve("@luna/billing"))), "../prisma/migrations");
await applyMigrations({ databaseUrl: db("chat"), migrationsDir });
await applyMigrations({ databaseUrl: db("billing"), migrationsDir: billingMigrations });
await applyMigrations({ databaseUrl: db("registry"), migrationsDir: registryMigrations });

const redis = connectRedis(env.BENCH_REDIS_URL!, { log, name: "chat-bench" });
const nc = await connectNats({ servers: env.BENCH_NATS_URL!, name: "chat-bench", log });
await ensureStreams(nc);
const userKey = await generateSigningKey({ kid: "bench-user" });
const internalKey = (await generateSigningKey({ kid: "bench-internal" })).privateJwk;
const verifier = createServiceVerifier({
  userIssuer: "luna-auth", audience: "luna", userKeys: { keys: async () => toJwks(userKey) },
  internalIssuer: "luna-internal", internalPublicKey: publicJwkOf(internalKey),
});
const metrics = createMetrics({ service: "luna", defaultMetrics: false });
const modules: ServiceModule[] = [];
const clients = inProcessClients({ modules: () => modules, verifier, internalKey, issuer: "luna-internal", audience: "luna", subject: "bench", timeoutMs: 10_000 });
const infra = { log, metrics, redis, nats: nc, js: jetstream(nc), clients };
const billing = await createBillingModule(loadConfig(billingConfigSchema, {
  BILLING_CONSUME_USER_EVENTS: "false", BILLING_INVARIANT_CHECK_INTERVAL: "0ms", BILLING_SIGNUP_CREDITS: "0",
  BILLING_RATE_LIMITS: JSON.stringify({ roles: { user: { rates: { chat: { limit: 1_000_000_000, per: "minute" } }, concurrency: { chat_stream: 1000 } } } }),
}), { ...infra, databaseUrl: db("billing") });
modules.push(billing as unknown as ServiceModule);
const registry = await createModelRegistryModule(loadConfig(registryConfigSchema, { REGISTRY_SEED: "false", REGISTRY_HEALTH_INTERVAL: "5s" }),
  { ...infra, databaseUrl: db("registry") });
modules.push(registry as unknown as ServiceModule);
const chat = await createChatRouterModule(loadConfig(chatRouterConfigSchema, { ...env, CHAT_TITLE_ENABLED: "false", CHAT_CONSUME_USER_EVENTS: "false" }),
  { ...infra, databaseUrl: db("chat") });
modules.push(chat as unknown as ServiceModule);
const hosted = await hostModules({ modules, verifier, metrics, log, host: "127.0.0.1", port: 0, adminPort: 0, corsOrigins: ["*"], shutdownGraceMs: 2000, readiness: [] });

// BENCH_COLD_START_S (wake.bench.ts): the models scale to zero with that expected cold start, and the simulator starts
// asleep, so they are STANDBY rather than AVAILABLE once known.
const coldStartSeconds = Number(env.BENCH_COLD_START_S ?? 0);
const scaleToZero = { scaleToZero: coldStartSeconds > 0, coldStartSeconds };
const known = (s: ModelStatus | undefined) => s === ModelStatus.AVAILABLE || (coldStartSeconds > 0 && s === ModelStatus.STANDBY);

// The model, through the registry's admin RPC (in process), served by the simulator.
const adminToken = await signAccessToken({ privateKey: userKey.privateKey, kid: userKey.kid, issuer: "luna-auth", audience: "luna", subject: "bench-admin", role: "admin", ttlSeconds: 3600 });
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
for (let i = 0; ["bench-model", "bench-model-paced"].some((id) => !known(chat.catalog.getModel(id)?.status)); i++) {
  if (i > 500) throw new Error("the benchmark model never became available");
  await new Promise((r) => setTimeout(r, 20));
}

const tokens: string[] = [];
for (let i = 0; i < users; i++) {
  const id = `bench-user-${i}`;
  await billing.ledger.store.openAccount(id);
  await billing.ledger.grant({ accountId: id, amount: 1_000_000_000n, reason: "bench", idempotencyKey: "bench" });
  tokens.push(await signAccessToken({ privateKey: userKey.privateKey, kid: userKey.kid, issuer: "luna-auth", audience: "luna", subject: id, role: "user", ttlSeconds: 3600 }));
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

process.send!({ type: "ready", port: hosted.port, tokens });
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
    void billing.ledger.checkInvariants().then((r) => process.send!({ type: "invariants", ok: r.ok, violations: r.violations.length }));
  } else if (m.type === "stop") {
    void (async () => {
      await hosted.close();
      await nc.drain();
      await redis.quit();
      process.exit(0);
    })();
  }
});
