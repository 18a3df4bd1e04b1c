// @luna/kit/testing: helpers for integration tests against the real Postgres, Redis and NATS that the root
// globalSetup (./global-setup.ts) starts once per `vitest run`.
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import pg from "pg";
import { inject } from "vitest";
import { startNats, startPostgres, startRedis, type ManagedServer, type NatsServer, type PostgresServer, type RedisServer } from "../localstack/index.js";
import { applyMigrations } from "../migrate.js";
import type { TestServersInfo } from "./provided.js";
import { makeTempDir } from "./tmp.js";

export type { TestServersInfo } from "./provided.js";
export { assertSchemaMatchesDatabase, schemaDifferences, type SchemaCheckOptions } from "./schema-drift.js";
export { spawnProgram, type SpawnProgramOptions } from "./spawn.js";

/** The shared servers of this test run. */
export interface TestServers {
  /** URL of database `db` on the shared Postgres (create it first, or use createTestDatabase). */
  postgresUrl(db: string): string;
  redisUrl: string;
  natsUrl: string;
  /** NATS HTTP monitoring (`/jsz`, `/healthz`). */
  natsMonitorUrl: string;
}

function provided(): TestServersInfo | undefined {
  try {
    return inject("lunaTestServers");
  } catch {
    return undefined; // not inside a vitest worker
  }
}

/** The shared Postgres, Redis and NATS of this `vitest run`; throws when the root globalSetup did not run. */
export function testServers(): TestServers {
  const info = provided();
  if (!info) {
    throw new Error(
      "the Luna test servers are not running: run tests from the repository root with its vitest.config.ts " +
        "(globalSetup packages/kit/src/testing/global-setup.ts starts them)",
    );
  }
  return {
    postgresUrl: (db) => `${info.postgresUrlBase}/${encodeURIComponent(db)}`,
    redisUrl: info.redisUrl,
    natsUrl: info.natsUrl,
    natsMonitorUrl: info.natsMonitorUrl,
  };
}

export interface TestDatabase {
  url: string;
  name: string;
  /** Drops the database, closing any connections still open to it. */
  drop(): Promise<void>;
}

export interface CreateTestDatabaseOptions {
  /** Apply these migrations (`prisma/migrations`) with applyMigrations. Default: an empty database. */
  migrationsDir?: string;
  /** Server to create it on. Default: the shared test Postgres. */
  postgres?: { url(db: string): string };
  /** Database name prefix (lowercase letters, digits, _). Default "test". */
  prefix?: string;
}

let databaseCounter = 0;

async function adminQuery(adminUrl: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  client.on("error", () => {});
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end().catch(() => {});
  }
}

/** A fresh database with a unique name (one per test file or test), migrated when `migrationsDir` is given. */
export async function createTestDatabase(opts: CreateTestDatabaseOptions = {}): Promise<TestDatabase> {
  const server = opts.postgres ?? { url: (db: string) => testServers().postgresUrl(db) };
  const prefix = opts.prefix ?? "test";
  if (!/^[a-z][a-z0-9_]{0,30}$/.test(prefix)) throw new Error(`invalid database prefix ${JSON.stringify(prefix)}: use lowercase letters, digits and _`);
  const name = `${prefix}_${process.pid}_${++databaseCounter}_${randomBytes(3).toString("hex")}`;
  const adminUrl = server.url("postgres");
  await adminQuery(adminUrl, `CREATE DATABASE "${name}"`);
  const url = server.url(name);
  const drop = () => adminQuery(adminUrl, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  if (opts.migrationsDir) {
    try {
      await applyMigrations({ databaseUrl: url, migrationsDir: opts.migrationsDir, createDatabase: false });
    } catch (err) {
      await drop().catch(() => {});
      throw err;
    }
  }
  return { url, name, drop };
}

/** A server of the test's own (stop/restart it freely); dispose() stops it and deletes its data. */
export type DedicatedServer<T extends ManagedServer> = T & { dispose(): Promise<void> };

export interface DedicatedOptions {
  /** Favour durability over speed (see ServerOptions.durable). Default false. */
  durable?: boolean;
}

// Data dirs of dedicated servers not yet disposed: removed when the worker exits (the servers die with it).
const undisposed = new Set<string>();
let exitHookInstalled = false;

function dedicatedDir(kind: string): string {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const dir of undisposed) rmSync(dir, { recursive: true, force: true });
    });
  }
  const dir = makeTempDir(provided()?.tmpRoot ?? tmpdir(), `${kind}-`);
  undisposed.add(dir);
  return dir;
}

function dedicated<T extends ManagedServer>(dir: string, start: (dataDir: string) => Promise<T>): Promise<DedicatedServer<T>> {
  return start(dir).then(
    (server) =>
      Object.assign(server, {
        dispose: async () => {
          await server.stop();
          rmSync(dir, { recursive: true, force: true });
          undisposed.delete(dir);
        },
      }),
    (err: unknown) => {
      rmSync(dir, { recursive: true, force: true });
      undisposed.delete(dir);
      throw err;
    },
  );
}

/** A Postgres of the test's own, e.g. to simulate a database outage with stop()/restart(). */
export function startDedicatedPostgres(opts: DedicatedOptions = {}): Promise<DedicatedServer<PostgresServer>> {
  const dir = dedicatedDir("postgres");
  return dedicated(dir, (dataDir) => startPostgres({ dataDir, durable: opts.durable }));
}

/** A Redis of the test's own. */
export function startDedicatedRedis(opts: DedicatedOptions = {}): Promise<DedicatedServer<RedisServer>> {
  const dir = dedicatedDir("redis");
  return dedicated(dir, (dataDir) => startRedis({ dataDir, durable: opts.durable }));
}

/** A NATS JetStream server of the test's own; its JetStream data survives restart(). */
export function startDedicatedNats(opts: DedicatedOptions = {}): Promise<DedicatedServer<NatsServer>> {
  const dir = dedicatedDir("nats");
  return dedicated(dir, (dataDir) => startNats({ dataDir, durable: opts.durable }));
}
