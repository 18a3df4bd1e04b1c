// Auth benchmark: sign-ins per second per core at the configured argon2 parameters, and JWT verifications per second
// per core. Starts its own Postgres and Redis (temporary, removed afterwards), so it runs anywhere `make dev` does:
//
//   node_modules/.bin/tsx --conditions=luna-source services/auth/bench/auth.bench.ts
//
// Environment: AUTH_ARGON2_* as the service reads them (defaults: the OWASP floor); BENCH_SECONDS per phase
// (default 5); BENCH_CONCURRENCY for sign-ins (default: the number of CPUs).
// "Per core" divides by the CPU time this process used (process.cpuUsage: the event loop plus libuv's pool threads,
// where argon2 runs), so the figure does not depend on how many cores the machine has. Postgres' and Redis' CPU is
// not included (they run in their own processes; the table shows their share of the wall time separately).
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { hash, verify, type Algorithm } from "@node-rs/argon2";
import type { JetStreamClient } from "@nats-io/jetstream";
import { applyMigrations, connectRedis, createJwtVerifier, createLogger, loadConfig } from "@luna/kit";
import { startPostgres, startRedis } from "@luna/kit/localstack";
import { markdownTable } from "@luna/kit/bench";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { authConfigSchema, createAuthModule } from "../src/index.js";

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? availableParallelism());

type Row = { metric: string; value: string; note: string };
const rows: Row[] = [];

/** Runs `op` from `workers` loops for `ms`; returns ops, wall seconds and CPU seconds of this process. */
async function measure(workers: number, ms: number, op: (i: number) => Promise<unknown>): Promise<{ ops: number; wall: number; cpu: number }> {
  let ops = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const deadline = t0 + ms;
  await Promise.all(Array.from({ length: workers }, async (_, w) => {
    while (performance.now() < deadline) {
      await op(w);
      ops++;
    }
  }));
  const wall = (performance.now() - t0) / 1000;
  const used = process.cpuUsage(cpu0);
  return { ops, wall, cpu: (used.user + used.system) / 1e6 };
}

const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "luna-auth-bench-"));
  chmodSync(dir, 0o755); // when run as root, Postgres runs as another user that must reach its data dir
  const log = createLogger({ service: "auth-bench", level: "warn" });
  const pgServer = await startPostgres({ dataDir: join(dir, "pg") });
  const redisServer = await startRedis({ dataDir: join(dir, "redis") });
  const redis = connectRedis(redisServer.url, { log, name: "auth-bench" });
  try {
    const databaseUrl = pgServer.url("auth_bench");
    await applyMigrations({ databaseUrl, migrationsDir: fileURLToPath(new URL("../prisma/migrations", import.meta.url)) });
    const config = loadConfig(authConfigSchema, { ...process.env, AUTH_ARGON2_MAX_CONCURRENCY: process.env.AUTH_ARGON2_MAX_CONCURRENCY ?? String(concurrency) });
    const params = `m=${config.AUTH_ARGON2_MEMORY_KIB} KiB, t=${config.AUTH_ARGON2_ITERATIONS}, p=${config.AUTH_ARGON2_PARALLELISM}`;
    // No NATS: the bench never starts the outbox relay (sign-up's events stay in the outbox table).
    const auth = await createAuthModule(config, { log, redis, js: { publish: () => Promise.reject(new Error("no NATS in the bench")) } as unknown as JetStreamClient, databaseUrl });
    await auth.rotateKeysNow();
    const client = createClient(AuthService, createRouterTransport((r) => auth.routes(r)));

    // Accounts to sign in to (one per worker, so the per-account throttle never engages on successes).
    const password = "benchmark passphrase that is long";
    const invites = await auth.accounts.createInvites(null, { count: concurrency, usesPerCode: 1, note: "bench" });
    const emails = await Promise.all(invites.map(async ({ code }, i) => {
      const email = `bench-${i}@example.com`;
      await client.signUp({ email, password, inviteCode: code, displayName: `Bench ${i}` });
      return email;
    }));

    // 1. argon2id alone, one at a time: the floor of what one core can do.
    const options = { algorithm: 2 as Algorithm, memoryCost: config.AUTH_ARGON2_MEMORY_KIB, timeCost: config.AUTH_ARGON2_ITERATIONS, parallelism: config.AUTH_ARGON2_PARALLELISM };
    const encoded = await hash(password, options);
    const raw = await measure(1, seconds * 1000, () => verify(encoded, password));
    rows.push({ metric: "argon2id verify, 1 at a time", value: `${fmt(raw.ops / raw.wall)}/s (${fmt((raw.wall / raw.ops) * 1000)} ms each)`, note: params });

    // 2. The SignIn RPC end to end (validation, Redis throttle, Postgres, argon2, session insert, JWT signing).
    const signIns = await measure(concurrency, seconds * 1000, (w) => client.signIn({ email: emails[w]!, password }));
    rows.push({ metric: `SignIn RPC, ${concurrency} concurrent`, value: `${fmt(signIns.ops / signIns.wall)}/s`, note: `wall throughput on ${availableParallelism()} CPUs` });
    rows.push({ metric: "SignIn per core", value: `${fmt(signIns.ops / signIns.cpu)}/s`, note: `this process' CPU: ${fmt((signIns.cpu / signIns.wall) * 100)}% of one core (Postgres, Redis excluded)` });

    // 3. JWT verification with the kit's verifier (what every service runs per request).
    const verifier = createJwtVerifier({ keys: () => auth.jwks(), issuer: config.LUNA_JWT_ISSUER, audience: config.LUNA_JWT_AUDIENCE });
    const token = (await client.signIn({ email: emails[0]!, password })).tokens!.accessToken;
    await verifier.verify(token);
    const jwt1 = await measure(1, seconds * 1000, () => verifier.verify(token));
    rows.push({ metric: "JWT verify (EdDSA), 1 at a time", value: `${fmt(jwt1.ops / jwt1.wall)}/s`, note: "kit createJwtVerifier" });
    const jwtN = await measure(64, seconds * 1000, () => verifier.verify(token));
    rows.push({ metric: "JWT verify, 64 concurrent", value: `${fmt(jwtN.ops / jwtN.wall)}/s`, note: `wall throughput on ${availableParallelism()} CPUs` });
    rows.push({ metric: "JWT verify per core", value: `${fmt(jwtN.ops / jwtN.cpu)}/s`, note: "ops per CPU-second of this process" });

    await auth.stop();
  } finally {
    redis.disconnect();
    await redisServer.stop();
    await pgServer.stop();
    rmSync(dir, { recursive: true, force: true });
  }

  console.log(`\nauth benchmark (${seconds} s per phase, Node ${process.version})\n`);
  console.log(markdownTable(["metric", "value", "note"], rows.map((r) => [r.metric, r.value, r.note])));
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
