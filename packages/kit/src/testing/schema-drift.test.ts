import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyMigrations } from "../migrate.js";
import { canonicalDbType } from "./schema-drift.js";
import { assertSchemaMatchesDatabase, createTestDatabase, schemaDifferences, type TestDatabase } from "./index.js";

const fixtures = join(import.meta.dirname, "../../test/fixtures/schema-drift");
const schemaPath = join(fixtures, "schema.prisma");
const agreeing = readFileSync(join(fixtures, "migration.sql"), "utf8");

let db: TestDatabase;
let work: string;
let variant = 0;

beforeAll(async () => {
  db = await createTestDatabase();
  work = mkdtempSync(join(tmpdir(), "luna-drift-"));
});
afterAll(async () => {
  await db?.drop();
  rmSync(work, { recursive: true, force: true });
});

/** Applies `sql` as the only migration into a fresh schema and returns a URL selecting that schema. */
async function migrated(sql: string): Promise<string> {
  const name = `v${++variant}`;
  const dir = join(work, name);
  mkdirSync(join(dir, "20250101000000_init"), { recursive: true });
  writeFileSync(join(dir, "20250101000000_init", "migration.sql"), sql);
  const url = `${db.url}?schema=${name}`;
  await applyMigrations({ databaseUrl: url, migrationsDir: dir });
  return url;
}

/** The fixture migration with one edit; fails loudly if the text to edit is not there. */
function edit(sql: string, from: string | RegExp, to: string): string {
  const out = sql.replace(from, to);
  if (out === sql) throw new Error(`fixture edit did not apply: ${from}`);
  return out;
}

const dropInbox = (sql: string) => edit(sql, /-- CreateTable\nCREATE TABLE "inbox_events"[\s\S]*?\n\);\n/, "");
const dropRating = (sql: string) => edit(sql, '    "rating" DOUBLE PRECISION,\n', "");
const narrowName = (sql: string) => edit(sql, '"display_name" VARCHAR(100)', '"display_name" VARCHAR(50)');
const nullableEmail = (sql: string) => edit(sql, '"email" TEXT NOT NULL', '"email" TEXT');
const dropCreatedIndex = (sql: string) => edit(sql, 'CREATE INDEX "users_created_at_idx" ON "users"("created_at" DESC);', "");

describe("assertSchemaMatchesDatabase", () => {
  it("passes when the migration matches the schema", async () => {
    const url = await migrated(agreeing);
    expect(await schemaDifferences({ schemaPath, databaseUrl: url })).toEqual([]);
    await expect(assertSchemaMatchesDatabase({ schemaPath, databaseUrl: url })).resolves.toBeUndefined();
  });

  it("names a missing table", async () => {
    const url = await migrated(dropInbox(agreeing));
    await expect(assertSchemaMatchesDatabase({ schemaPath, databaseUrl: url })).rejects.toThrow(/missing table inbox_events \(model InboxEvent\)/);
  });

  it("names a missing column", async () => {
    const url = await migrated(dropRating(agreeing));
    expect(await schemaDifferences({ schemaPath, databaseUrl: url })).toEqual(["missing column users.rating (User.rating Float?)"]);
  });

  it("names a wrong type, native types included", async () => {
    const url = await migrated(edit(narrowName(agreeing), '"created_at" TIMESTAMPTZ(3)', '"created_at" TIMESTAMP(3)'));
    expect(await schemaDifferences({ schemaPath, databaseUrl: url })).toEqual([
      "wrong type for users.display_name (User.displayName String? @db.VarChar(100)): database has varchar(50), schema expects varchar(100)",
      "wrong type for users.created_at (User.createdAt DateTime @db.Timestamptz(3)): database has timestamp(3), schema expects timestamptz(3)",
    ]);
  });

  it("names wrong nullability", async () => {
    const url = await migrated(edit(nullableEmail(agreeing), '"rating" DOUBLE PRECISION', '"rating" DOUBLE PRECISION NOT NULL'));
    expect(await schemaDifferences({ schemaPath, databaseUrl: url })).toEqual([
      "wrong nullability for users.email (User.email String): database column is nullable, schema says required",
      "wrong nullability for users.rating (User.rating Float?): database column is NOT NULL, schema says optional",
    ]);
  });

  it("names a missing index and a wrong sort order", async () => {
    const url = await migrated(edit(dropCreatedIndex(agreeing), 'ON "posts"("author_id");', 'ON "posts"("slug");'));
    expect(await schemaDifferences({ schemaPath, databaseUrl: url })).toEqual([
      "missing index on users (created_at DESC) (model User)",
      "missing index on posts (author_id) (model Post)",
      "extra index posts_author_id_idx on posts (slug): not in model Post",
    ]);
  });

  it("names missing primary keys, unique indexes and a mapped index name", async () => {
    let sql = edit(agreeing, /,\n\n {4}CONSTRAINT "inbox_events_pkey" PRIMARY KEY \("consumer","event_id"\)/, "");
    sql = edit(sql, 'CREATE UNIQUE INDEX "users_email_key" ON "users"("email");', "");
    sql = edit(sql, '"posts_author_slug"', '"posts_slug_idx"');
    const url = await migrated(sql);
    expect(await schemaDifferences({ schemaPath, databaseUrl: url })).toEqual([
      "missing unique index on users (email) (model User)",
      "unique index on posts (author_id, slug) is named posts_slug_idx in the database, schema maps it to posts_author_slug",
      "missing primary key on inbox_events (consumer, event_id) (model InboxEvent)",
    ]);
  });

  it("names extra tables and columns unless ignored", async () => {
    const url = await migrated(`${agreeing}\nALTER TABLE "posts" ADD COLUMN "legacy" INTEGER;\nCREATE TABLE "stray" ("id" INTEGER);\n`);
    expect(await schemaDifferences({ schemaPath, databaseUrl: url })).toEqual([
      "extra column posts.legacy: not in model Post",
      "extra table stray: no model maps to it",
    ]);
    expect(await schemaDifferences({ schemaPath, databaseUrl: url, ignoreTables: ["stray"] })).toEqual(["extra column posts.legacy: not in model Post"]);
  });

  it("lists every difference in one error", async () => {
    const url = await migrated(dropCreatedIndex(nullableEmail(narrowName(dropRating(dropInbox(agreeing))))));
    const error = await assertSchemaMatchesDatabase({ schemaPath, databaseUrl: url }).catch((e: unknown) => e as Error);
    expect(error).toBeInstanceOf(Error);
    expect(error!.message).toContain("does not match the database (5 difference(s))");
    for (const part of [
      "missing table inbox_events",
      "missing column users.rating",
      "wrong type for users.display_name",
      "wrong nullability for users.email",
      "missing index on users (created_at DESC)",
    ]) {
      expect(error!.message).toContain(part);
    }
  });

  it("reports an invalid schema with Prisma's validation message", async () => {
    const bad = join(work, "bad.prisma");
    writeFileSync(bad, 'datasource db {\n  provider = "postgresql"\n}\nmodel X {\n  id Int @id\n  other Missing\n}\n');
    await expect(assertSchemaMatchesDatabase({ schemaPath: bad, databaseUrl: db.url })).rejects.toThrow(/invalid Prisma schema[\s\S]*Missing/);
  });
});

describe("canonicalDbType", () => {
  it("normalizes Postgres type names to the schema's vocabulary", () => {
    expect(canonicalDbType("character varying(100)", null, false)).toBe("varchar(100)");
    expect(canonicalDbType("character(1)", null, false)).toBe("char(1)");
    expect(canonicalDbType("timestamp(3) without time zone", null, false)).toBe("timestamp(3)");
    expect(canonicalDbType("timestamp with time zone", null, false)).toBe("timestamptz(6)");
    expect(canonicalDbType("time(2) with time zone", null, false)).toBe("timetz(2)");
    expect(canonicalDbType("text[]", null, true)).toBe("text[]");
    expect(canonicalDbType('"Role"[]', "Role", true)).toBe("enum Role[]");
    expect(canonicalDbType("numeric(65,30)", null, false)).toBe("numeric(65,30)");
  });
});
