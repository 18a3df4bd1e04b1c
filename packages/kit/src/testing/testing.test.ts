import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { pingRedis } from "../localstack/index.js";
import { createTestDatabase, startDedicatedNats, startDedicatedPostgres, startDedicatedRedis, testServers } from "./index.js";

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  client.on("error", () => {});
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

describe("testServers", () => {
  it("points at the running shared Postgres, Redis and NATS", async () => {
    const servers = testServers();
    expect(await query(servers.postgresUrl("postgres"), "SELECT 1 AS one")).toEqual([{ one: 1 }]);
    await pingRedis(Number(new URL(servers.redisUrl).port));
    const health = await fetch(`${servers.natsMonitorUrl}/healthz`);
    expect(health.status).toBe(200);
    const nc = await connect({ servers: servers.natsUrl });
    await nc.close();
  });
});

describe("createTestDatabase", () => {
  it("gives each caller its own database and drops it", async () => {
    const [a, b] = await Promise.all([createTestDatabase(), createTestDatabase()]);
    try {
      expect(a.name).not.toBe(b.name);
      await query(a.url, "CREATE TABLE only_in_a (id int)");
      expect(await query(a.url, "SELECT to_regclass('only_in_a')::text AS t")).toEqual([{ t: "only_in_a" }]);
      expect(await query(b.url, "SELECT to_regclass('only_in_a')::text AS t")).toEqual([{ t: null }]);
    } finally {
      await a.drop();
      await b.drop();
    }
    const left = await query(testServers().postgresUrl("postgres"), `SELECT datname FROM pg_database WHERE datname IN ('${a.name}', '${b.name}')`);
    expect(left).toEqual([]);
  });

  it("applies migrations when given a migrations folder, and drops the database when they fail", async () => {
    const dir = mkdtempSync(join(tmpdir(), "luna-testdb-"));
    try {
      mkdirSync(join(dir, "20250101000000_init"));
      writeFileSync(join(dir, "20250101000000_init", "migration.sql"), "CREATE TABLE accounts (id int PRIMARY KEY);\n");
      const db = await createTestDatabase({ migrationsDir: dir, prefix: "billing" });
      try {
        expect(db.name).toMatch(/^billing_/);
        expect(await query(db.url, "SELECT migration_name FROM _prisma_migrations")).toEqual([{ migration_name: "20250101000000_init" }]);
        expect(await query(db.url, "SELECT count(*)::int AS n FROM accounts")).toEqual([{ n: 0 }]);
      } finally {
        await db.drop();
      }
      writeFileSync(join(dir, "20250101000000_init", "migration.sql"), "CREATE TABLE broken (;\n");
      await expect(createTestDatabase({ migrationsDir: dir, prefix: "broken" })).rejects.toThrow(/20250101000000_init failed/);
      const left = await query(testServers().postgresUrl("postgres"), `SELECT datname FROM pg_database WHERE datname LIKE 'broken\\_${process.pid}\\_%'`);
      expect(left).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rejects a prefix that is not a plain identifier", async () => {
    await expect(createTestDatabase({ prefix: 'x"; DROP' })).rejects.toThrow(/invalid database prefix/);
  });
});

describe("dedicated servers", () => {
  it("NATS keeps JetStream data and its port across restart()", async () => {
    const nats = await startDedicatedNats();
    try {
      let nc = await connect({ servers: nats.url });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "KEEP", subjects: ["keep.>"] }); // file storage is the default
      const js = jetstream(nc);
      for (const n of [1, 2, 3]) await js.publish("keep.item", new TextEncoder().encode(`item ${n}`));
      await nc.close();

      const port = nats.port;
      await nats.restart();
      expect(nats.port).toBe(port);

      nc = await connect({ servers: nats.url });
      try {
        const after = await jetstreamManager(nc);
        expect((await after.streams.info("KEEP")).state.messages).toBe(3);
        expect((await after.streams.getMessage("KEEP", { seq: 2 }))?.string()).toBe("item 2");
      } finally {
        await nc.close();
      }
    } finally {
      await nats.dispose();
    }
    expect(existsSync(nats.dataDir)).toBe(false);
  });

  it("Postgres goes away on stop() and comes back with its data on restart()", async () => {
    const postgres = await startDedicatedPostgres();
    try {
      const url = postgres.url("postgres");
      await query(url, "CREATE TABLE survives (v text); INSERT INTO survives VALUES ('yes')");
      await postgres.stop();
      await expect(query(url, "SELECT 1")).rejects.toThrow(/ECONNREFUSED/);
      await postgres.restart();
      expect(await query(url, "SELECT v FROM survives")).toEqual([{ v: "yes" }]);
      const db = await createTestDatabase({ postgres });
      expect(db.url).toContain(`:${postgres.port}/`);
      await db.drop();
    } finally {
      await postgres.dispose();
    }
  });

  it("Redis restarts on the same port", async () => {
    const redis = await startDedicatedRedis();
    try {
      await redis.stop();
      await expect(pingRedis(redis.port)).rejects.toThrow();
      await redis.restart();
      await pingRedis(redis.port);
    } finally {
      await redis.dispose();
    }
  });
});
