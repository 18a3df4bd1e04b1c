// @luna/devstack: the local Postgres, Redis and NATS JetStream that `make dev` and the all-in-one process use,
// with data under <repo>/.luna. Servers outlive the process that started them, so a second start adopts them.
import {
  DEFAULT_PG_USER,
  ensureServerBinaries,
  findRunningServer,
  pingRedis,
  startNats,
  startPostgres,
  startRedis,
  stopServerInDir,
  type LocalLog,
  type NatsServer,
  type PostgresServer,
  type RedisServer,
  type ServerKind,
} from "@luna/kit/localstack";
import { join } from "node:path";
import pg from "pg";
import type { DevStackPorts } from "./config.js";

export { devAdmin, devSecret } from "./dev-secrets.js";
export { DEFAULT_PORTS, DEV_STACK_ENV, devStackConfig, findRepoRoot, type DevStackConfig, type DevStackPorts } from "./config.js";

export interface DevStackUrls {
  /** Postgres server URL without a database: append `/<database>`. */
  databaseUrlBase: string;
  redisUrl: string;
  natsUrl: string;
  natsMonitorUrl: string;
}

export interface DevStack {
  postgres: PostgresServer;
  redis: RedisServer;
  nats: NatsServer;
  urls: DevStackUrls;
  /** Creates each database that does not exist yet; returns the ones it created. */
  createDatabases(names: string[]): Promise<string[]>;
  /** Stops all three servers (their data stays). */
  stop(): Promise<void>;
}

export interface StartDevStackOptions {
  dataDir: string;
  ports: DevStackPorts;
  log?: LocalLog;
  /** Keep the servers running after this process exits, so the next start adopts them. Default true. */
  keepRunning?: boolean;
  /** Postgres with fsync and Redis with persistence. Default true (this is your development data). */
  durable?: boolean;
}

const silent: LocalLog = { info() {}, warn() {} };

/** Where each server keeps its files under the stack's data dir. */
export function serverDirs(dataDir: string): Record<ServerKind, string> {
  return { postgres: join(dataDir, "postgres"), redis: join(dataDir, "redis"), nats: join(dataDir, "nats") };
}

/** URLs of a stack on the given ports. */
export function devStackUrls(ports: DevStackPorts, pgUser = DEFAULT_PG_USER): DevStackUrls {
  return {
    databaseUrlBase: `postgresql://${pgUser}@127.0.0.1:${ports.postgres}`,
    redisUrl: `redis://127.0.0.1:${ports.redis}`,
    natsUrl: `nats://127.0.0.1:${ports.nats}`,
    natsMonitorUrl: `http://127.0.0.1:${ports.natsMonitor}`,
  };
}

/**
 * Ensures the server binaries (installing missing ones), then starts Postgres, Redis and NATS JetStream under
 * `dataDir`, or adopts them when they already run from there.
 */
export async function startDevStack(opts: StartDevStackOptions): Promise<DevStack> {
  const log = opts.log ?? silent;
  const dirs = serverDirs(opts.dataDir);
  const common = { log, keepRunning: opts.keepRunning ?? true, durable: opts.durable ?? true };
  await ensureServerBinaries(log);
  const results = await Promise.allSettled([
    startPostgres({ ...common, dataDir: dirs.postgres, port: opts.ports.postgres }),
    startRedis({ ...common, dataDir: dirs.redis, port: opts.ports.redis }),
    startNats({ ...common, dataDir: dirs.nats, port: opts.ports.nats, monitorPort: opts.ports.natsMonitor }),
  ]);
  const failures = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failures.length > 0) {
    // Leave nothing half-started that we started ourselves; adopted servers were running before, keep them.
    await Promise.allSettled(
      results.map((r) => (r.status === "fulfilled" && !r.value.reused ? r.value.stop() : undefined)),
    );
    throw new Error(failures.map((f) => (f.reason instanceof Error ? f.reason.message : String(f.reason))).join("\n\n"));
  }
  const [postgres, redis, nats] = results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as [PostgresServer, RedisServer, NatsServer];
  return {
    postgres,
    redis,
    nats,
    urls: {
      databaseUrlBase: `postgresql://${postgres.user}@127.0.0.1:${postgres.port}`,
      redisUrl: redis.url,
      natsUrl: nats.url,
      natsMonitorUrl: nats.monitorUrl,
    },
    createDatabases: (names) => createDatabases(postgres, names, log),
    stop: async () => {
      await Promise.all([postgres.stop(), redis.stop(), nats.stop()]);
    },
  };
}

const DATABASE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Creates each named database on the server if it does not exist; returns the names it created. */
export async function createDatabases(server: { url(db: string): string }, names: string[], log: LocalLog = silent): Promise<string[]> {
  for (const name of names) {
    if (!DATABASE_NAME.test(name)) throw new Error(`invalid database name ${JSON.stringify(name)}: use lowercase letters, digits and _`);
  }
  const client = new pg.Client({ connectionString: server.url("postgres") });
  client.on("error", () => {});
  await client.connect();
  const created: string[] = [];
  try {
    for (const name of names) {
      const exists = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
      if (exists.rowCount) continue;
      try {
        await client.query(`CREATE DATABASE "${name}"`);
        created.push(name);
        log.info(`created database ${name}`);
      } catch (err) {
        if ((err as { code?: string }).code !== "42P04") throw err; // created meanwhile by another process
      }
    }
  } finally {
    await client.end().catch(() => {});
  }
  return created;
}

export interface ServerStatus {
  kind: ServerKind;
  running: boolean;
  pid?: number;
  ports?: number[];
  /** The server answered a health check (SELECT 1 / PING / NATS /healthz). */
  healthy: boolean;
  detail?: string;
}

async function health(kind: ServerKind, ports: number[]): Promise<void> {
  if (kind === "redis") return pingRedis(ports[0]!);
  if (kind === "nats") {
    const res = await fetch(`http://127.0.0.1:${ports[1]}/healthz`, { signal: AbortSignal.timeout(2_000) });
    if (!res.ok) throw new Error(`/healthz answered ${res.status}`);
    return;
  }
  const client = new pg.Client({ host: "127.0.0.1", port: ports[0], user: DEFAULT_PG_USER, database: "postgres", connectionTimeoutMillis: 2_000 });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("SELECT 1");
  } finally {
    await client.end().catch(() => {});
  }
}

/** Which dev stack servers run from `dataDir`, and whether they answer. */
export async function devStackStatus(dataDir: string): Promise<ServerStatus[]> {
  const dirs = serverDirs(dataDir);
  return Promise.all(
    (Object.keys(dirs) as ServerKind[]).map(async (kind): Promise<ServerStatus> => {
      const running = findRunningServer(dirs[kind], kind);
      if (!running) return { kind, running: false, healthy: false };
      try {
        await health(kind, running.ports);
        return { kind, running: true, pid: running.pid, ports: running.ports, healthy: true };
      } catch (err) {
        return { kind, running: true, pid: running.pid, ports: running.ports, healthy: false, detail: (err as Error).message };
      }
    }),
  );
}

/** Stops the dev stack servers running from `dataDir` (started by any process); returns which ones were running. */
export async function stopDevStack(dataDir: string): Promise<ServerKind[]> {
  const dirs = serverDirs(dataDir);
  const kinds = Object.keys(dirs) as ServerKind[];
  const stopped = await Promise.all(kinds.map((kind) => stopServerInDir(dirs[kind], kind)));
  return kinds.filter((_, i) => stopped[i]);
}
