import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  applyMigrations,
  checksumMatches,
  listMigrations,
  markMigrationRolledBack,
  migrationChecksum,
  MigrationError,
  PRISMA_MIGRATE_LOCK_ID,
} from "./migrate.js";
import { createTestDatabase, testServers, type TestDatabase } from "./testing/index.js";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A migrations folder with the given `<name>: sql` entries (plus Prisma's migration_lock.toml). */
function migrationsDir(migrations: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "luna-migrate-test-"));
  dirs.push(dir);
  writeFileSync(join(dir, "migration_lock.toml"), 'provider = "postgresql"\n');
  for (const [name, sql] of Object.entries(migrations)) addMigration(dir, name, sql);
  return dir;
}

function addMigration(dir: string, name: string, sql: string): void {
  mkdirSync(join(dir, name), { recursive: true });
  writeFileSync(join(dir, name, "migration.sql"), sql);
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql, values)).rows;
  } finally {
    await client.end();
  }
}

const INIT = `-- CreateTable
CREATE TABLE "accounts" ("id" UUID NOT NULL, "balance" BIGINT NOT NULL DEFAULT 0, CONSTRAINT "accounts_pkey" PRIMARY KEY ("id"));
`;
const ADD_COLUMN = `ALTER TABLE "accounts" ADD COLUMN "owner" TEXT;\nCREATE INDEX "accounts_owner_idx" ON "accounts"("owner");\n`;

describe("checksums", () => {
  it("is the sha256 hex of the script (Prisma's own test vector)", () => {
    expect(migrationChecksum("hello")).toBe("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
  });

  it("matches regardless of line endings, like Prisma", () => {
    const unix = "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n";
    const windows = unix.replaceAll("\n", "\r\n");
    expect(checksumMatches(windows, migrationChecksum(unix))).toBe(true);
    expect(checksumMatches(unix, migrationChecksum(windows))).toBe(true);
    expect(checksumMatches("abc\n", migrationChecksum("abc"))).toBe(false);
  });

  it("accepts the unpadded hex format recorded by old Prisma versions", () => {
    const unpaddedHex = (s: string) => [...createHash("sha256").update(s).digest()].map((b) => b.toString(16)).join("");
    // Only meaningful when some digest byte is < 0x10 (so padding matters): pick the first such script.
    let i = 0;
    while (unpaddedHex(`SELECT ${i};`).length === 64) i++;
    const script = `SELECT ${i};`;
    const unpadded = unpaddedHex(script);
    expect(checksumMatches(script, unpadded)).toBe(true);
    expect(checksumMatches(`SELECT ${i + 1};`, unpadded)).toBe(false);
  });
});

describe("listMigrations", () => {
  it("sorts folders by name and skips files", () => {
    const dir = migrationsDir({ "20250102000000_second": "SELECT 2;", "20250101000000_first": "SELECT 1;" });
    expect(listMigrations(dir).map((m) => m.name)).toEqual(["20250101000000_first", "20250102000000_second"]);
  });

  it("refuses a folder without migration.sql, a missing folder and another provider", () => {
    const dir = migrationsDir({});
    mkdirSync(join(dir, "20250101000000_empty"));
    expect(() => listMigrations(dir)).toThrow(/20250101000000_empty has no migration.sql/);
    expect(() => listMigrations(join(dir, "nope"))).toThrow(/migrations folder not found/);
    const mysql = migrationsDir({});
    writeFileSync(join(mysql, "migration_lock.toml"), 'provider = "mysql"\n');
    expect(() => listMigrations(mysql)).toThrow(/provider "mysql"/);
  });
});

describe("applyMigrations", () => {
  let db: TestDatabase;
  beforeEach(async () => {
    db = await createTestDatabase();
  });
  afterEach(async () => {
    await db.drop();
  });

  it("applies pending migrations in folder order and records them as prisma migrate deploy does", async () => {
    const dir = migrationsDir({ "20250102000000_owner": ADD_COLUMN, "20250101000000_init": INIT });
    const result = await applyMigrations({ databaseUrl: db.url, migrationsDir: dir });
    expect(result.applied).toEqual(["20250101000000_init", "20250102000000_owner"]);

    // The table definition Prisma's schema engine creates for PostgreSQL.
    const columns = await query(
      db.url,
      `SELECT column_name, data_type, character_maximum_length AS len, is_nullable, column_default
       FROM information_schema.columns WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position`,
    );
    expect(columns).toEqual([
      { column_name: "id", data_type: "character varying", len: 36, is_nullable: "NO", column_default: null },
      { column_name: "checksum", data_type: "character varying", len: 64, is_nullable: "NO", column_default: null },
      { column_name: "finished_at", data_type: "timestamp with time zone", len: null, is_nullable: "YES", column_default: null },
      { column_name: "migration_name", data_type: "character varying", len: 255, is_nullable: "NO", column_default: null },
      { column_name: "logs", data_type: "text", len: null, is_nullable: "YES", column_default: null },
      { column_name: "rolled_back_at", data_type: "timestamp with time zone", len: null, is_nullable: "YES", column_default: null },
      { column_name: "started_at", data_type: "timestamp with time zone", len: null, is_nullable: "NO", column_default: "now()" },
      { column_name: "applied_steps_count", data_type: "integer", len: null, is_nullable: "NO", column_default: "0" },
    ]);
    const pk = await query(db.url, `SELECT a.attname FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey)
      WHERE x.indrelid = '_prisma_migrations'::regclass AND x.indisprimary`);
    expect(pk).toEqual([{ attname: "id" }]);

    const rows = await query<{ id: string; checksum: string; migration_name: string; logs: string | null; rolled_back_at: Date | null;
      started_at: Date; finished_at: Date | null; applied_steps_count: number }>(db.url, "SELECT * FROM _prisma_migrations ORDER BY migration_name");
    expect(rows.map((r) => r.migration_name)).toEqual(["20250101000000_init", "20250102000000_owner"]);
    expect(rows.map((r) => r.checksum)).toEqual([migrationChecksum(INIT), migrationChecksum(ADD_COLUMN)]);
    for (const row of rows) {
      expect(row.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(row.applied_steps_count).toBe(1);
      expect(row.logs).toBeNull();
      expect(row.rolled_back_at).toBeNull();
      expect(row.finished_at).not.toBeNull();
      expect(row.finished_at!.getTime()).toBeGreaterThanOrEqual(row.started_at.getTime());
    }
    // The schema really changed.
    const owner = await query(db.url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'owner'");
    expect(owner).toHaveLength(1);
  });

  it("applies nothing on a second run and only new migrations later", async () => {
    const dir = migrationsDir({ "20250101000000_init": INIT });
    expect((await applyMigrations({ databaseUrl: db.url, migrationsDir: dir })).applied).toEqual(["20250101000000_init"]);
    expect((await applyMigrations({ databaseUrl: db.url, migrationsDir: dir })).applied).toEqual([]);
    addMigration(dir, "20250102000000_owner", ADD_COLUMN);
    expect((await applyMigrations({ databaseUrl: db.url, migrationsDir: dir })).applied).toEqual(["20250102000000_owner"]);
    expect(await query(db.url, "SELECT count(*)::int AS n FROM _prisma_migrations")).toEqual([{ n: 2 }]);
  });

  it("refuses when an applied migration's file changed, and applies nothing", async () => {
    const dir = migrationsDir({ "20250101000000_init": INIT });
    await applyMigrations({ databaseUrl: db.url, migrationsDir: dir });
    addMigration(dir, "20250101000000_init", INIT + "-- edited\n");
    addMigration(dir, "20250102000000_owner", ADD_COLUMN);
    const err = await applyMigrations({ databaseUrl: db.url, migrationsDir: dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationError);
    expect((err as Error).message).toMatch(/20250101000000_init: recorded [0-9a-f]{64}, file [0-9a-f]{64}/);
    expect(await query(db.url, "SELECT migration_name FROM _prisma_migrations")).toEqual([{ migration_name: "20250101000000_init" }]);
  });

  it("accepts an applied file whose line endings changed", async () => {
    const dir = migrationsDir({ "20250101000000_init": INIT });
    await applyMigrations({ databaseUrl: db.url, migrationsDir: dir });
    addMigration(dir, "20250101000000_init", INIT.replaceAll("\n", "\r\n"));
    expect((await applyMigrations({ databaseUrl: db.url, migrationsDir: dir })).applied).toEqual([]);
  });

  it("rolls back a failing migration, records it as failed, refuses until it is marked rolled back", async () => {
    const broken = `CREATE TABLE "first_half" (id int);\nSELECT * FROM "no_such_table";\n`;
    const dir = migrationsDir({ "20250101000000_init": INIT, "20250102000000_broken": broken });
    const err = await applyMigrations({ databaseUrl: db.url, migrationsDir: dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationError);
    expect((err as Error).message).toMatch(/20250102000000_broken failed and was rolled back/);
    expect((err as Error).message).toMatch(/42P01/);
    expect((err as Error).message).toMatch(/line 2/);

    const rows = await query<{ migration_name: string; finished_at: Date | null; logs: string | null; applied_steps_count: number }>(
      db.url, "SELECT migration_name, finished_at, logs, applied_steps_count FROM _prisma_migrations ORDER BY migration_name");
    expect(rows[0]).toMatchObject({ migration_name: "20250101000000_init", applied_steps_count: 1 });
    expect(rows[1]).toMatchObject({ migration_name: "20250102000000_broken", finished_at: null, applied_steps_count: 0 });
    expect(rows[1]!.logs).toMatch(/no_such_table/);
    // The transaction took the first statement back with it.
    expect(await query(db.url, "SELECT to_regclass('first_half') AS t")).toEqual([{ t: null }]);

    addMigration(dir, "20250102000000_broken", `CREATE TABLE "first_half" (id int);\n`);
    await expect(applyMigrations({ databaseUrl: db.url, migrationsDir: dir })).rejects.toThrow(/found failed migrations[\s\S]*20250102000000_broken/);

    expect(await markMigrationRolledBack({ databaseUrl: db.url, migrationName: "20250102000000_broken" })).toBe(1);
    expect((await applyMigrations({ databaseUrl: db.url, migrationsDir: dir })).applied).toEqual(["20250102000000_broken"]);
    await expect(markMigrationRolledBack({ databaseUrl: db.url, migrationName: "20250102000000_broken" })).rejects.toThrow(/no failed migration/);
  });

  it("applies each migration once when several runners start together", async () => {
    const migrations: Record<string, string> = {};
    for (let i = 1; i <= 5; i++) migrations[`2025010${i}000000_step${i}`] = `CREATE TABLE "t${i}" (id int);\n`;
    const dir = migrationsDir(migrations);
    const results = await Promise.all(Array.from({ length: 6 }, () => applyMigrations({ databaseUrl: db.url, migrationsDir: dir })));
    // Exactly one runner did the work; the others found everything applied (a runner waits on the advisory lock).
    const applied = results.flatMap((r) => r.applied).sort();
    expect(applied).toEqual(Object.keys(migrations).sort());
    expect(results.filter((r) => r.applied.length > 0)).toHaveLength(1);
    expect(await query(db.url, "SELECT migration_name, count(*)::int AS n FROM _prisma_migrations GROUP BY 1 HAVING count(*) > 1")).toEqual([]);
  });

  it("waits for the advisory lock and gives up after lockTimeoutMs", async () => {
    const dir = migrationsDir({ "20250101000000_init": INIT });
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query("SELECT pg_advisory_lock($1)", [PRISMA_MIGRATE_LOCK_ID]);
      await expect(applyMigrations({ databaseUrl: db.url, migrationsDir: dir, lockTimeoutMs: 200 })).rejects.toThrow(/waiting for the migration lock/);
      const waiting = applyMigrations({ databaseUrl: db.url, migrationsDir: dir, lockTimeoutMs: 10_000 });
      await holder.query("SELECT pg_sleep(0.2), pg_advisory_unlock($1)", [PRISMA_MIGRATE_LOCK_ID]);
      expect((await waiting).applied).toEqual(["20250101000000_init"]);
    } finally {
      await holder.end();
    }
  });

  it("refuses a database that has tables but no migration history", async () => {
    await query(db.url, "CREATE TABLE legacy (id int)");
    const dir = migrationsDir({ "20250101000000_init": INIT });
    await expect(applyMigrations({ databaseUrl: db.url, migrationsDir: dir })).rejects.toThrow(/not empty \(legacy\)/);
  });

  it("applies into the schema named by ?schema=", async () => {
    const dir = migrationsDir({ "20250101000000_init": INIT });
    await applyMigrations({ databaseUrl: `${db.url}?schema=billing`, migrationsDir: dir });
    expect(await query(db.url, "SELECT to_regclass('billing.accounts')::text AS t, to_regclass('billing._prisma_migrations')::text AS m"))
      .toEqual([{ t: "billing.accounts", m: "billing._prisma_migrations" }]);
  });
});

describe("applyMigrations database creation", () => {
  it("creates a missing database unless told not to", async () => {
    const name = `migrate_create_${process.pid}_${Date.now()}`;
    const url = testServers().postgresUrl(name);
    const dir = migrationsDir({ "20250101000000_init": INIT });
    await expect(applyMigrations({ databaseUrl: url, migrationsDir: dir, createDatabase: false })).rejects.toThrow(/does not exist/);
    try {
      expect((await applyMigrations({ databaseUrl: url, migrationsDir: dir })).applied).toEqual(["20250101000000_init"]);
    } finally {
      await query(testServers().postgresUrl("postgres"), `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    }
  });

  it("rejects a URL that is not a Postgres URL", async () => {
    const dir = migrationsDir({});
    await expect(applyMigrations({ databaseUrl: "mysql://x/y", migrationsDir: dir })).rejects.toThrow(/must start with postgresql:\/\//);
    await expect(applyMigrations({ databaseUrl: "not a url", migrationsDir: dir })).rejects.toThrow(/invalid database URL/);
  });
});
