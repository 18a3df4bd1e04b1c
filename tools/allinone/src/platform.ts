// The all-in-one platform: every service module on one port, in one process, over the local dev stack and the
// inference simulators. `main.ts` runs it for `make dev`; the end-to-end tests start it in-process.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  applyMigrations,
  connectNats,
  connectRedis,
  createLogger,
  createMetrics,
  createRevocationList,
  createApiKeyVerifier,
  createServiceVerifier,
  ensureStreams,
  generateSigningKey,
  hostModules,
  inProcessClients,
  loadConfig,
  loadInternalKey,
  natsReady,
  publicJwkOf,
  redisReady,
  runtimeConfigSchema,
  trustedProxiesOf,
  type HostedModules,
  type Logger,
  type Redis,
  type ServiceInfra,
  type ServiceModule,
} from "@luna/kit";
import type { JSONWebKeySet, JWK } from "jose";
import * as z from "zod";
import { port as portSchema, url as urlSchema, bool } from "@luna/kit";
import { serveWebClient } from "@luna/web";
import { MODULES, type ModuleEntry } from "./modules.js";

/** Variables of the all-in-one process (on top of the services' own; see the README's configuration table). */
export const platformConfigSchema = z.object({
  LUNA_DEV_HOST: z.string().default("127.0.0.1"),
  /** Where to reach a real vLLM / OpenAI-compatible server; unset = start the simulator. */
  LUNA_VLLM_URL: urlSchema().optional(),
  LUNA_COMFYUI_URL: urlSchema().optional(),
  LUNA_SIM_VLLM_PORT: portSchema(8000),
  LUNA_SIM_COMFYUI_PORT: portSchema(8188),
  /** Stop Postgres, Redis and NATS when the platform stops (they keep their data either way). */
  LUNA_STOP_STACK_ON_EXIT: bool(true),
});

export interface PlatformOptions {
  /** Root of local data (.luna): servers' data, internal key, invites file. */
  dataDir: string;
  env: NodeJS.ProcessEnv;
  /** Postgres/Redis/NATS coordinates (from the dev stack, or from test servers). */
  stack: { databaseUrl(db: string): string; redisUrl: string; natsUrl: string };
  log?: Logger;
  /** Progress lines for a person waiting (make dev); silent in tests. */
  progress?: (line: string) => void;
}

export interface Platform {
  port: number;
  adminPort: number;
  modules: ServiceModule[];
  simulators: { vllmUrl: string; comfyUrl: string; started: boolean };
  /** Lines worth printing once started (invite codes, admin credentials). */
  notes: string[];
  stop(): Promise<void>;
}

/** Loads the internal service key from the data dir, creating it (0600) on first start. */
export async function ensureInternalKey(dataDir: string): Promise<JWK> {
  const file = join(dataDir, "internal-key.json");
  if (existsSync(file)) return JSON.parse(readFileSync(file, "utf8")) as JWK;
  const key = await generateSigningKey({ kid: "internal-dev" });
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(file, JSON.stringify(key.privateJwk), { mode: 0o600 });
  chmodSync(file, 0o600);
  return key.privateJwk;
}

/** Starts the whole platform; resolves once it serves. */
export async function startPlatform(opts: PlatformOptions): Promise<Platform> {
  const progress = opts.progress ?? (() => {});
  const runtime = loadConfig(runtimeConfigSchema, opts.env);
  const platform = loadConfig(platformConfigSchema, opts.env);
  const log = opts.log ?? createLogger({ service: "luna", level: runtime.LOG_LEVEL });
  const cleanups: Array<() => Promise<void>> = [];
  try {
    // Inference: simulators unless real endpoints are configured.
    const sims = await startSimulators(platform, progress, cleanups);
    const env = {
      REGISTRY_SEED_VLLM_URL: sims.vllmUrl,
      REGISTRY_SEED_COMFYUI_URL: sims.comfyUrl,
      ...opts.env,
    };

    progress("applying database migrations");
    for (const entry of MODULES) {
      if (!entry.migrationsDir) continue;
      const { applied } = await applyMigrations({ databaseUrl: opts.stack.databaseUrl(entry.database), migrationsDir: entry.migrationsDir });
      if (applied.length > 0) progress(`  ${entry.name}: applied ${applied.join(", ")}`);
    }

    const internalKey = runtime.LUNA_INTERNAL_KEY || runtime.LUNA_INTERNAL_KEY_FILE
      ? loadInternalKey(runtime)
      : await ensureInternalKey(opts.dataDir);
    const redis: Redis = connectRedis(opts.stack.redisUrl, { log, name: "luna" });
    cleanups.push(async () => void (await redis.quit().catch(() => undefined)));
    const nats: NatsConnection = await connectNats({ servers: opts.stack.natsUrl, name: "luna", log });
    cleanups.push(() => nats.drain().catch(() => undefined));
    await ensureStreams(nats);

    // One registry for every module: prom-client cannot merge registries holding the same metric names.
    const metrics = createMetrics({ service: "luna" });
    const modules: ServiceModule[] = [];
    const authJwks = (): Promise<JSONWebKeySet> => {
      const auth = modules.find((m) => m.name === "auth");
      if (!auth?.jwks) throw new Error("the auth module is not hosted");
      return auth.jwks();
    };
    const revocations = createRevocationList({ redis, checkIntervalMs: runtime.LUNA_REVOCATION_CHECK_INTERVAL, log });
    const verifier = createServiceVerifier({
      userIssuer: runtime.LUNA_JWT_ISSUER,
      audience: runtime.LUNA_JWT_AUDIENCE,
      userKeys: { keys: authJwks },
      internalIssuer: runtime.LUNA_INTERNAL_ISSUER,
      internalPublicKey: publicJwkOf(internalKey),
      revocations,
      // API keys: the hosted auth module answers directly (no call through a transport).
      apiKeys: createApiKeyVerifier({
        lookup: (key) => {
          const auth = modules.find((m) => m.name === "auth");
          if (!auth?.apiKeyLookup) throw new Error("the auth module is not hosted");
          return auth.apiKeyLookup(key);
        },
        revocations,
        cacheTtlMs: runtime.LUNA_API_KEY_CACHE_TTL,
      }),
    });
    const clients = inProcessClients({ modules: () => modules, verifier, internalKey, issuer: runtime.LUNA_INTERNAL_ISSUER,
      audience: runtime.LUNA_JWT_AUDIENCE, subject: "luna", timeoutMs: runtime.LUNA_CALL_TIMEOUT });

    progress("starting services");
    const notes: string[] = [];
    // Where clients reach this platform (signed image URLs are absolute there); unknown with a random port.
    const urlHost = ["0.0.0.0", "::", ""].includes(platform.LUNA_DEV_HOST) ? "localhost" : platform.LUNA_DEV_HOST;
    const publicUrl = runtime.LUNA_PORT > 0 ? `http://${urlHost.includes(":") ? `[${urlHost}]` : urlHost}:${runtime.LUNA_PORT}` : "";
    for (const entry of MODULES) {
      const infra: ServiceInfra = { log: log.child({ module: entry.name }), metrics, redis, nats, js: jetstream(nats),
        databaseUrl: opts.stack.databaseUrl(entry.database), clients };
      const mod = await entry.create(env, infra, { dataDir: opts.dataDir, notes, comfyUrl: sims.comfyUrl, publicUrl });
      modules.push(mod);
      progress(`  ${entry.name} ready`);
    }

    // It uses only what HTTP/1.1 and HTTP/2-compatibility requests share (browsers reach it over either).
    const webClient = serveWebClient();
    const hosted: HostedModules = await hostModules({
      modules, verifier, metrics, log, host: platform.LUNA_DEV_HOST, port: runtime.LUNA_PORT, adminPort: runtime.LUNA_ADMIN_PORT,
      corsOrigins: runtime.LUNA_CORS_ORIGINS, shutdownGraceMs: runtime.LUNA_SHUTDOWN_GRACE, publicOnly: true,
      // No gateway in front of the all-in-one: trust no x-forwarded-for hop unless LUNA_TRUSTED_PROXY_HOPS says so.
      trustedProxies: trustedProxiesOf(runtime, 0),
      // The reference web client at / (after the modules' own routes: JWKS, signed image URLs).
      http: (req, res) => webClient(req as IncomingMessage, res as ServerResponse),
      readiness: [
        { name: "redis", check: () => redisReady(redis) },
        { name: "nats", check: () => natsReady(nats) },
      ],
    });
    for (const entry of MODULES) await entry.afterStart?.(modules.find((m) => m.name === entry.name)!, { dataDir: opts.dataDir, notes });

    let stopping: Promise<void> | undefined;
    return {
      port: hosted.port,
      adminPort: hosted.adminPort,
      modules,
      simulators: sims,
      notes,
      stop() {
        stopping ??= (async () => {
          await hosted.close();
          for (const c of cleanups.reverse()) await c();
        })();
        return stopping;
      },
    };
  } catch (err) {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    throw err;
  }
}

/** Starts the vLLM and ComfyUI simulators unless real endpoints are configured; their `close` goes into `cleanups`. */
export async function startSimulators(config: z.infer<typeof platformConfigSchema>, progress: (l: string) => void,
  cleanups: Array<() => Promise<void>>): Promise<Platform["simulators"]> {
  let vllmUrl = config.LUNA_VLLM_URL;
  let comfyUrl = config.LUNA_COMFYUI_URL;
  let started = false;
  if (!vllmUrl) {
    const { startVllmSim } = await import("@luna/sim-vllm");
    const models = simulatedTextModels();
    const sim = await startVllmSim({ port: config.LUNA_SIM_VLLM_PORT, host: "127.0.0.1", profile: "realistic",
      ...(models.length > 0 ? { models } : {}) });
    cleanups.push(() => sim.close());
    vllmUrl = sim.url;
    started = true;
    progress(`  vLLM simulator on ${sim.url}`);
  }
  if (!comfyUrl) {
    const { startComfySim } = await import("@luna/sim-comfyui");
    const sim = await startComfySim({ port: config.LUNA_SIM_COMFYUI_PORT, host: "127.0.0.1" });
    cleanups.push(() => sim.close());
    comfyUrl = sim.url;
    started = true;
    progress(`  ComfyUI simulator on ${sim.url}`);
  }
  return { vllmUrl, comfyUrl, started };
}

/** The text models of the seeded catalog, so the simulator serves every one of them. */
function simulatedTextModels(): Array<{ name: string; maxModelLen: number }> {
  return MODULES.flatMap((m: ModuleEntry) => m.simulatedModels ?? []);
}
