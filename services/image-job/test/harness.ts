// A whole image platform for integration tests: the real model-registry, billing and image-job modules hosted on one
// port (the kit's hostModules + inProcessClients, as in the all-in-one process), real Postgres and Redis (shared
// test servers), a NATS of this test file's own (so durable consumers never meet another file's), the ComfyUI
// simulator, and image workers in-process or as child processes.
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ImageService } from "@luna/contracts/luna/image/v1/image_service_pb.js";
import { ModelAdminService } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { billingConfigSchema, createBillingModule, type BillingModule } from "@luna/billing";
import {
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
  signAccessToken,
  type HostedModules,
  type Logger,
  type Redis,
  type ServiceModule,
  type SigningKey,
} from "@luna/kit";
import { createTestDatabase, spawnProgram, startDedicatedNats, testServers, type TestDatabase } from "@luna/kit/testing";
import * as registry from "@luna/model-registry";
import { startComfySim, type ComfySim, type ComfySimOptions } from "@luna/sim-comfyui";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  configSchema,
  createImageJobModule,
  createImageWorker,
  migrationsDir,
  workerConfigSchema,
  type ImageJobModule,
  type ImageWorker,
} from "../src/index.js";

const BILLING_MIGRATIONS = fileURLToPath(new URL("../../billing/prisma/migrations", import.meta.url));
const WORKER_MAIN = fileURLToPath(new URL("../src/worker/main.ts", import.meta.url));
const SERVICE_MAIN = fileURLToPath(new URL("../src/main.ts", import.meta.url));
const REPO_ROOT = fileURLToPath(new URL("../../..", import.meta.url));

export const ISSUER = "luna-auth";
export const AUDIENCE = "luna";
export const INTERNAL_ISSUER = "luna-internal";

export interface HarnessOptions {
  /** image-job settings over the test defaults. */
  image?: Record<string, string>;
  /** Worker settings over the test defaults. */
  worker?: Record<string, string>;
  /** model-registry settings over the test defaults (e.g. a REGISTRY_HEALTH_INTERVAL, off by default). */
  registry?: Record<string, string>;
  sim?: ComfySimOptions;
  /** Start one in-process worker (default true). */
  worker0?: boolean;
  signupCredits?: number;
  /** Billing's per-minute image job limit for role user (default generous, so only tests of the limit meet it). */
  imagePerMinute?: number;
  /** NATS with JetStream on disk, so that stopNats/startNats keep the streams (an outage, not a wipe). */
  durableNats?: boolean;
}

export interface Harness {
  baseUrl: string;
  sim: ComfySim;
  imageJob: ImageJobModule;
  billing: BillingModule;
  nc: NatsConnection;
  natsUrl: string;
  /** Stops this harness's NATS server (an outage: clients reconnect once it is back). */
  stopNats(): Promise<void>;
  /** Starts it again on the same port with the same data. */
  startNats(): Promise<void>;
  imageDir: string;
  /** image-job's database. */
  jobDatabaseUrl: string;
  /** The hosted modules' metrics registry. */
  metrics: ReturnType<typeof createMetrics>;
  /** The registry's admin API, as an operator (role admin). */
  admin: Client<typeof ModelAdminService>;
  /** A new user with the sign-up credits. */
  newUser(): Promise<{ id: string; client: Client<typeof ImageService>; transport: Transport }>;
  /** An access token of a user (e.g. for the OpenAI-compatible API's clients). */
  userToken(userId: string): Promise<string>;
  /** Starts an in-process worker with its own NATS connection. */
  startWorker(overrides?: Record<string, string>): Promise<InProcessWorker>;
  /** Starts a worker as a child process (`src/worker/main.ts`), talking to image-job over the network. */
  spawnWorker(overrides?: Record<string, string>): Promise<ChildProcess>;
  workerEnv(overrides?: Record<string, string>): Record<string, string>;
  /**
   * Starts image-job as a child process (`src/main.ts`) on the same database and NATS, calling this harness's billing
   * and model-registry over the network; `client(userId)` talks to it as that user. For crash tests (SIGKILL).
   */
  spawnImageJob(overrides?: Record<string, string>): Promise<{ child: ChildProcess; client(userId: string): Client<typeof ImageService> }>;
  balance(userId: string): Promise<{ balance: bigint; held: bigint; available: bigint }>;
  assertLedgerConsistent(): Promise<void>;
  close(): Promise<void>;
}

export interface InProcessWorker {
  worker: ImageWorker;
  nc: NatsConnection;
  stop(): Promise<void>;
}

export const TEST_IMAGE_CONFIG: Record<string, string> = {
  IMAGE_SWEEP_INTERVAL: "200ms",
  IMAGE_WATCH_REFRESH: "200ms",
  IMAGE_URL_SECRET: "test-secret-test-secret-test-secret-0123",
  IMAGE_DB_POOL_SIZE: "5",
  IMAGE_DEADLINE_GRACE: "1s",
};

export const TEST_WORKER_CONFIG: Record<string, string> = {
  IMAGE_WORKER_HISTORY_POLL: "100ms",
  IMAGE_WORKER_ACK_WAIT: "2s",
  IMAGE_WORKER_COMFY_WAIT: "2s",
  IMAGE_WORKER_COMFY_TIMEOUT: "5s",
  IMAGE_WORKER_PROGRESS_INTERVAL: "20ms",
};

let userCounter = 0;

export async function startHarness(opts: HarnessOptions = {}): Promise<Harness> {
  const cleanups: Array<() => Promise<void>> = [];
  const log: Logger = createLogger({ service: "image-job-test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
  try {
    const natsServer = await startDedicatedNats({ durable: opts.durableNats });
    cleanups.push(() => natsServer.dispose());
    const sim = await startComfySim({ stepMs: 5, ...opts.sim });
    cleanups.push(() => sim.close());
    const dbs: TestDatabase[] = await Promise.all([
      createTestDatabase({ migrationsDir: registry.migrationsDir, prefix: "imgreg" }),
      createTestDatabase({ migrationsDir: BILLING_MIGRATIONS, prefix: "imgbill" }),
      createTestDatabase({ migrationsDir, prefix: "imgjob" }),
    ]);
    cleanups.push(async () => void (await Promise.all(dbs.map((d) => d.drop()))));
    const [regDb, billDb, jobDb] = dbs as [TestDatabase, TestDatabase, TestDatabase];
    const imageDir = mkdtempSync(join(tmpdir(), "luna-images-"));
    cleanups.push(async () => rmSync(imageDir, { recursive: true, force: true }));

    const redis: Redis = connectRedis(testServers().redisUrl, { log, name: "image-job-test" });
    cleanups.push(async () => void redis.disconnect());
    const nc = await connectNats({ servers: natsServer.url, name: "image-job-test", log });
    cleanups.push(() => nc.close());
    await ensureStreams(nc);
    const js = jetstream(nc);

    const userKey: SigningKey = await generateSigningKey({ kid: "user-key" });
    const internalKey: SigningKey = await generateSigningKey({ kid: "internal-key" });
    const verifier = createServiceVerifier({
      userIssuer: ISSUER, audience: AUDIENCE, userKeys: { keys: async () => ({ keys: [userKey.publicJwk] }) },
      internalIssuer: INTERNAL_ISSUER, internalPublicKey: internalKey.publicJwk,
    });
    const metrics = createMetrics({ service: "image-job-test" });
    const modules: ServiceModule[] = [];
    const clients = inProcessClients({ modules: () => modules, verifier, internalKey: internalKey.privateJwk, issuer: INTERNAL_ISSUER,
      audience: AUDIENCE, subject: "test", timeoutMs: 10_000 });
    const infra = { log, metrics, redis, nats: nc, js, clients };

    modules.push(await registry.createModelRegistryModule(
      loadConfig(registry.configSchema, { REGISTRY_SEED_COMFYUI_URL: sim.url, REGISTRY_SEED_VLLM_URL: "http://127.0.0.1:9", REGISTRY_HEALTH_INTERVAL: "0s",
        ...opts.registry }),
      { ...infra, databaseUrl: regDb.url }));
    const billing = await createBillingModule(
      loadConfig(billingConfigSchema, { BILLING_CONSUME_USER_EVENTS: "false", BILLING_SIGNUP_CREDITS: String(opts.signupCredits ?? 1000),
        BILLING_INVARIANT_CHECK_INTERVAL: "0ms", BILLING_DB_POOL_SIZE: "5",
        BILLING_RATE_LIMITS: JSON.stringify({ roles: { user: { rates: { image: { limit: opts.imagePerMinute ?? 1000, per: "minute" } } } } }) }),
      { ...infra, databaseUrl: billDb.url });
    modules.push(billing);
    const imageJob = await createImageJobModule(
      loadConfig(configSchema, { ...TEST_IMAGE_CONFIG, IMAGE_LOCAL_DIR: imageDir, ...opts.image }),
      { ...infra, databaseUrl: jobDb.url });
    modules.push(imageJob);

    const hosted: HostedModules = await hostModules({
      modules, verifier, metrics, log, host: "127.0.0.1", port: 0, adminPort: 0, corsOrigins: [], shutdownGraceMs: 500, readiness: [],
    });
    cleanups.push(() => hosted.close());
    const baseUrl = `http://127.0.0.1:${hosted.port}`;

    const workers: InProcessWorker[] = [];
    const children: ChildProcess[] = [];
    cleanups.push(async () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    });
    cleanups.push(async () => void (await Promise.all(workers.map((w) => w.stop()))));

    const workerEnv = (overrides: Record<string, string> = {}): Record<string, string> => ({
      ...TEST_WORKER_CONFIG,
      COMFYUI_URL: sim.url,
      IMAGE_LOCAL_DIR: imageDir,
      ...opts.worker,
      ...overrides,
    });

    const admin = createClient(ModelAdminService, createGrpcTransport({
      baseUrl,
      interceptors: [(next) => async (req) => {
        req.header.set("authorization", `Bearer ${await signAccessToken({ privateKey: userKey.privateJwk, kid: userKey.kid, issuer: ISSUER,
          audience: AUDIENCE, subject: "admin-1", role: "admin", ttlSeconds: 600 })}`);
        return next(req);
      }],
    }));
    const harness: Harness = {
      baseUrl, sim, imageJob, billing, nc, natsUrl: natsServer.url, stopNats: () => natsServer.stop(), startNats: () => natsServer.restart(), imageDir, jobDatabaseUrl: jobDb.url, metrics, admin,
      userToken: (userId) => signAccessToken({ privateKey: userKey.privateJwk, kid: userKey.kid, issuer: ISSUER, audience: AUDIENCE,
        subject: userId, role: "user", ttlSeconds: 600 }),
      async newUser() {
        const id = `user-${process.pid}-${++userCounter}-${Math.random().toString(36).slice(2, 8)}`;
        await billing.ledger.openAccountWithSignupGrant(id);
        const transport = createGrpcTransport({
          baseUrl,
          interceptors: [(next) => async (req) => {
            req.header.set("authorization", `Bearer ${await signAccessToken({ privateKey: userKey.privateJwk, kid: userKey.kid, issuer: ISSUER,
              audience: AUDIENCE, subject: id, role: "user", ttlSeconds: 600 })}`);
            return next(req);
          }],
        });
        return { id, client: createClient(ImageService, transport), transport };
      },
      async startWorker(overrides = {}) {
        const wnc = await connectNats({ servers: natsServer.url, name: "image-worker-test", log });
        const worker = createImageWorker(loadConfig(workerConfigSchema, workerEnv(overrides)), {
          log, nats: wnc, js: jetstream(wnc), transport: clients.transport("image-job"), store: imageJob.imageStore,
        });
        await worker.start();
        let stopped = false;
        const w: InProcessWorker = {
          worker, nc: wnc,
          async stop() {
            if (stopped) return;
            stopped = true;
            await worker.stop();
            await wnc.close().catch(() => undefined);
          },
        };
        workers.push(w);
        return w;
      },
      async spawnWorker(overrides = {}) {
        const env = {
          ...process.env,
          ...workerEnv(overrides),
          NATS_URL: natsServer.url,
          LUNA_SERVICE_URLS: `image-job=${baseUrl}`,
          LUNA_INTERNAL_KEY: JSON.stringify(internalKey.privateJwk),
          LUNA_INTERNAL_ISSUER: INTERNAL_ISSUER,
          LUNA_JWT_AUDIENCE: AUDIENCE,
          LUNA_ADMIN_PORT: overrides.LUNA_ADMIN_PORT ?? String(await freePort()),
          LUNA_HOST: "127.0.0.1",
          LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "info",
        };
        const child = await spawnProgram({ main: WORKER_MAIN, cwd: REPO_ROOT, env, readyLine: "image worker started", name: "image worker",
          onSpawn: (c) => children.push(c) });
        return child;
      },
      workerEnv,
      async spawnImageJob(overrides = {}) {
        // The child verifies user tokens from a JWKS URL, as a deployed service does.
        const jwks = createHttpServer((_req, res) => {
          res.setHeader("content-type", "application/json");
          res.end(JSON.stringify({ keys: [userKey.publicJwk] }));
        });
        await new Promise<void>((r) => jwks.listen(0, "127.0.0.1", r));
        cleanups.push(() => new Promise<void>((r) => jwks.close(() => r())));
        const port = await freePort();
        const env = {
          ...process.env,
          ...TEST_IMAGE_CONFIG,
          IMAGE_LOCAL_DIR: imageDir,
          ...opts.image,
          DATABASE_URL: jobDb.url,
          LUNA_MIGRATE_ON_START: "false",
          NATS_URL: natsServer.url,
          REDIS_URL: testServers().redisUrl,
          LUNA_SERVICE_URLS: `billing=${baseUrl},model-registry=${baseUrl}`,
          LUNA_INTERNAL_KEY: JSON.stringify(internalKey.privateJwk),
          LUNA_INTERNAL_ISSUER: INTERNAL_ISSUER,
          LUNA_JWT_ISSUER: ISSUER,
          LUNA_JWT_AUDIENCE: AUDIENCE,
          LUNA_JWKS_URL: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`,
          LUNA_HOST: "127.0.0.1",
          LUNA_PORT: String(port),
          LUNA_ADMIN_PORT: String(await freePort()),
          LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "info",
          ...overrides,
        };
        const child = await spawnProgram({ main: SERVICE_MAIN, cwd: REPO_ROOT, env, readyLine: "image-job listening", name: "image-job",
          onSpawn: (c) => children.push(c) });
        const client = (userId: string) => createClient(ImageService, createGrpcTransport({
          baseUrl: `http://127.0.0.1:${port}`,
          interceptors: [(next) => async (req) => {
            req.header.set("authorization", `Bearer ${await signAccessToken({ privateKey: userKey.privateJwk, kid: userKey.kid, issuer: ISSUER,
              audience: AUDIENCE, subject: userId, role: "user", ttlSeconds: 600 })}`);
            return next(req);
          }],
        }));
        return { child, client };
      },
      async balance(userId) {
        const acct = await billing.ledger.store.getAccount(userId);
        return { balance: acct!.balance, held: acct!.held, available: acct!.balance - acct!.held };
      },
      async assertLedgerConsistent() {
        const report = await billing.ledger.checkInvariants();
        if (!report.ok) throw new Error(`ledger invariants violated: ${JSON.stringify(report.violations)}`);
      },
      async close() {
        for (const c of cleanups.reverse()) await c().catch(() => undefined);
      },
    };
    if (opts.worker0 !== false) await harness.startWorker();
    return harness;
  } catch (err) {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    throw err;
  }
}

/** A TCP port nothing listens on right now (the kit's config does not accept port 0). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Polls `fn` until it returns a value that is not undefined (or throws after `timeoutMs`). */
export async function eventually<T>(fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000, what = "condition"): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
