// Offline replacement for `prisma migrate deploy` (Prisma's CLI needs a native schema engine that these machines
// cannot download). It reads the same folders and keeps the same `_prisma_migrations` bookkeeping, so a database
// migrated here can later be handled by the Prisma CLI and vice versa.
import { createHash, randomUUID } from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";

export interface MigrateLog {
  info(msg: string): void;
  warn(msg: string): void;
}

export interface ApplyMigrationsOptions {
  /** Postgres URL of the target database. A Prisma-style `?schema=name` parameter selects the schema (default public). */
  databaseUrl: string;
  /** Folder holding `<timestamp>_<name>/migration.sql` (a service's `prisma/migrations`). */
  migrationsDir: string;
  log?: MigrateLog;
  /** Create the database when it does not exist, as `prisma migrate deploy` does. Default true. */
  createDatabase?: boolean;
  /** How long to wait for another runner holding the migration lock. Default 60 000 ms. */
  lockTimeoutMs?: number;
}

export interface ApplyMigrationsResult {
  /** Names of the migrations applied by this call, in order (empty when the database was up to date). */
  applied: string[];
}

/** A migration on disk. */
export interface MigrationFile {
  /** Folder name, `<timestamp>_<name>`; recorded as `migration_name`. */
  name: string;
  path: string;
  script: string;
  /** sha256 hex of migration.sql, as recorded in `_prisma_migrations.checksum`. */
  checksum: string;
}

/** A row of `_prisma_migrations`. */
export interface MigrationRecord {
  id: string;
  checksum: string;
  finished_at: Date | null;
  migration_name: string;
  logs: string | null;
  rolled_back_at: Date | null;
  started_at: Date;
  applied_steps_count: number;
}

/** Why migrations were not applied; the message says what to do. */
export class MigrationError extends Error {
  override name = "MigrationError";
}

/** The advisory lock key `prisma migrate` takes, so this runner and the Prisma CLI exclude each other too. */
export const PRISMA_MIGRATE_LOCK_ID = 72707369;
export const DEFAULT_LOCK_TIMEOUT_MS = 60_000;

/** Table definition used by Prisma's schema engine for PostgreSQL (sql-schema-connector, flavour/postgres.rs). */
export const PRISMA_MIGRATIONS_TABLE_SQL = `CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);
`;

const silent: MigrateLog = { info() {}, warn() {} };

/** sha256 hex of a migration script: Prisma's checksum format. */
export function migrationChecksum(script: string | Buffer): string {
  return createHash("sha256").update(script).digest("hex");
}

/**
 * Whether a script matches a recorded checksum, the way Prisma decides it: line endings do not matter (git may
 * rewrite them), and old Prisma versions recorded hex bytes without zero padding.
 */
export function checksumMatches(script: string, recorded: string): boolean {
  const variants = [script, script.replaceAll("\r\n", "\n"), script.replaceAll("\n", "\r\n")];
  return variants.some((variant) => {
    const digest = createHash("sha256").update(variant).digest();
    const rendered =
      recorded.length !== 64 && recorded.length > 0
        ? [...digest].map((b) => b.toString(16)).join("")
        : digest.toString("hex");
    return rendered === recorded;
  });
}

/** The migrations in a folder, sorted by folder name (their timestamp prefix), as Prisma orders them. */
export function listMigrations(migrationsDir: string): MigrationFile[] {
  if (!existsSync(migrationsDir) || !statSync(migrationsDir).isDirectory()) {
    throw new MigrationError(`migrations folder not found: ${migrationsDir}`);
  }
  const lock = join(migrationsDir, "migration_lock.toml");
  if (existsSync(lock)) {
    const provider = /^\s*provider\s*=\s*"([^"]*)"/m.exec(readFileSync(lock, "utf8"))?.[1];
    if (provider && provider !== "postgresql") {
      throw new MigrationError(`${lock} says provider "${provider}", but this runner only applies PostgreSQL migrations`);
    }
  }
  return readdirSync(migrationsDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort()
    .map((name) => {
      const path = join(migrationsDir, name, "migration.sql");
      if (!existsSync(path)) throw new MigrationError(`migration ${name} has no migration.sql (expected ${path})`);
      const bytes = readFileSync(path);
      return { name, path, script: bytes.toString("utf8"), checksum: migrationChecksum(bytes) };
    });
}

interface Target {
  connectionString: string;
  database: string;
  schema: string;
}

function parseTarget(databaseUrl: string): Target {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    throw new MigrationError(`invalid database URL: ${JSON.stringify(databaseUrl)}`);
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new MigrationError(`database URL must start with postgresql:// (got ${url.protocol}//)`);
  }
  const database = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (!database) throw new MigrationError(`database URL has no database name: ${redact(url)}`);
  // `schema` is Prisma's parameter; node-postgres does not know it.
  const schema = url.searchParams.get("schema") || "public";
  url.searchParams.delete("schema");
  return { connectionString: url.toString(), database, schema };
}

function redact(url: URL): string {
  const copy = new URL(url.toString());
  if (copy.password) copy.password = "***";
  return copy.toString();
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

async function connect(connectionString: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString, application_name: "luna-migrate" });
  client.on("error", () => {}); // a dropped connection also rejects the pending query; do not crash the process
  await client.connect();
  return client;
}

/** Connects to the target database, creating it first (like `prisma migrate deploy`) when allowed. */
async function connectCreating(target: Target, create: boolean, log: MigrateLog): Promise<pg.Client> {
  try {
    return await connect(target.connectionString);
  } catch (err) {
    if ((err as { code?: string }).code !== "3D000" || !create) throw err;
  }
  const adminUrl = new URL(target.connectionString);
  adminUrl.pathname = "/postgres";
  const admin = await connect(adminUrl.toString());
  try {
    await admin.query(`CREATE DATABASE ${quoteIdent(target.database)}`);
    log.info(`created database ${target.database}`);
  } catch (err) {
    if ((err as { code?: string }).code !== "42P04") throw err; // created meanwhile by a concurrent runner
  } finally {
    await admin.end();
  }
  return connect(target.connectionString);
}

/** Prisma's failure text: error code, message and where in the script it happened. */
function describeDbError(err: unknown, script: string): string {
  const e = err as { code?: string; message?: string; position?: string; detail?: string; hint?: string };
  const parts = [`Database error code: ${e.code ?? "unknown"}`, `Database error:\n${e.message ?? String(err)}`];
  if (e.detail) parts.push(`DETAIL: ${e.detail}`);
  if (e.hint) parts.push(`HINT: ${e.hint}`);
  const position = Number(e.position);
  if (position > 0) {
    const before = script.slice(0, position - 1).split("\n");
    const line = before.length;
    parts.push(`Position: line ${line}, column ${before[line - 1]!.length + 1}: ${script.split("\n")[line - 1]?.trim() ?? ""}`);
  }
  return parts.join("\n\n");
}

async function ensureMigrationsTable(client: pg.Client, target: Target): Promise<void> {
  const exists = await client.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 AND c.relname = '_prisma_migrations' AND c.relkind IN ('r', 'p')`,
    [target.schema],
  );
  if (exists.rows[0]!.n > 0) return;
  // Like `prisma migrate deploy` (error P3005): never take over a database that already has tables.
  const tables = await client.query<{ relname: string }>(
    `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname <> 'spatial_ref_sys' ORDER BY 1`,
    [target.schema],
  );
  if (tables.rows.length > 0) {
    throw new MigrationError(
      `database ${target.database} (schema ${target.schema}) is not empty (${tables.rows.map((r) => r.relname).join(", ")}) ` +
        `and has no _prisma_migrations table; baseline it first (prisma migrate resolve --applied <first migration>)`,
    );
  }
  await client.query(PRISMA_MIGRATIONS_TABLE_SQL);
}

async function withMigrationLock<T>(client: pg.Client, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  await client.query(`SET lock_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
  try {
    await client.query("SELECT pg_advisory_lock($1)", [PRISMA_MIGRATE_LOCK_ID]);
  } catch (err) {
    if ((err as { code?: string }).code === "55P03") {
      throw new MigrationError(
        `timed out after ${timeoutMs} ms waiting for the migration lock (pg_advisory_lock(${PRISMA_MIGRATE_LOCK_ID})): ` +
          `another migration runner is still working on this database`,
      );
    }
    throw err;
  }
  await client.query("RESET lock_timeout");
  try {
    return await fn();
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [PRISMA_MIGRATE_LOCK_ID]).catch(() => {});
  }
}

/**
 * Applies the migrations in `migrationsDir` that the database has not recorded yet, in folder-name order, each in
 * its own transaction, recording `_prisma_migrations` rows exactly as `prisma migrate deploy` does. Holds Prisma's
 * advisory lock meanwhile, so concurrent runners (several replicas starting at once) apply each migration once.
 * Refuses with a MigrationError when a recorded migration failed (and was not marked rolled back), or when the
 * migration.sql of an applied migration no longer matches its recorded checksum.
 */
export async function applyMigrations(opts: ApplyMigrationsOptions): Promise<ApplyMigrationsResult> {
  const log = opts.log ?? silent;
  const files = listMigrations(opts.migrationsDir);
  const target = parseTarget(opts.databaseUrl);
  const client = await connectCreating(target, opts.createDatabase ?? true, log);
  try {
    if (target.schema !== "public") await client.query(`SET search_path TO ${quoteIdent(target.schema)}`);
    return await withMigrationLock(client, opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS, async () => {
      // Under the lock: concurrent CREATE SCHEMA IF NOT EXISTS can still collide.
      if (target.schema !== "public") await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(target.schema)}`);
      await ensureMigrationsTable(client, target);
      const records = (await client.query<MigrationRecord>("SELECT * FROM _prisma_migrations ORDER BY started_at, migration_name")).rows;
      checkHistory(records, files, target, log);
      const done = new Set(records.filter((r) => r.rolled_back_at === null).map((r) => r.migration_name));
      const pending = files.filter((f) => !done.has(f.name));
      if (pending.length === 0) {
        log.info(`${target.database}: no pending migrations (${files.length} applied)`);
        return { applied: [] };
      }
      const applied: string[] = [];
      for (const file of pending) {
        log.info(`${target.database}: applying ${file.name}`);
        await applyOne(client, file, target);
        applied.push(file.name);
      }
      log.info(`${target.database}: applied ${applied.length} migration(s)`);
      return { applied };
    });
  } finally {
    await client.end().catch(() => {});
  }
}

function checkHistory(records: MigrationRecord[], files: MigrationFile[], target: Target, log: MigrateLog): void {
  const failed = records.filter((r) => r.finished_at === null && r.rolled_back_at === null);
  if (failed.length > 0) {
    const details = failed
      .map((r) => `- ${r.migration_name} (started ${r.started_at.toISOString()})${r.logs?.trim() ? `:\n${r.logs.trim()}` : ""}`)
      .join("\n");
    throw new MigrationError(
      `${target.database}: found failed migrations in _prisma_migrations; no migration was applied.\n${details}\n` +
        `Fix the migration, then mark it rolled back (luna-migrate --mark-rolled-back <name>, or ` +
        `prisma migrate resolve --rolled-back <name>) and run again.`,
    );
  }
  const byName = new Map(files.map((f) => [f.name, f]));
  const changed: string[] = [];
  for (const record of records) {
    if (record.rolled_back_at !== null) continue;
    const file = byName.get(record.migration_name);
    if (!file) {
      log.warn(`${target.database}: migration ${record.migration_name} is applied but missing from the migrations folder`);
    } else if (!checksumMatches(file.script, record.checksum)) {
      changed.push(`- ${record.migration_name}: recorded ${record.checksum}, file ${file.checksum}`);
    }
  }
  if (changed.length > 0) {
    throw new MigrationError(
      `${target.database}: migration.sql changed after it was applied; no migration was applied.\n${changed.join("\n")}\n` +
        `Restore the applied files and put the change in a new migration.`,
    );
  }
}

async function applyOne(client: pg.Client, file: MigrationFile, target: Target): Promise<void> {
  const id = randomUUID();
  // Recorded before the script runs, as Prisma does: a crash mid-way leaves an unfinished row that blocks later runs.
  await client.query("INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at) VALUES ($1, $2, $3, now())", [
    id,
    file.checksum,
    file.name,
  ]);
  try {
    await client.query("BEGIN");
    await client.query(file.script); // simple query protocol: the whole multi-statement script at once
    await client.query(
      "UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1, finished_at = clock_timestamp() WHERE id = $1",
      [id],
    );
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    const logs = describeDbError(err, file.script);
    await client.query("UPDATE _prisma_migrations SET logs = $2 WHERE id = $1", [id, logs]).catch(() => {});
    throw new MigrationError(
      `${target.database}: migration ${file.name} failed and was rolled back; it is recorded as failed.\n${logs}\n` +
        `Fix ${file.path}, then run: luna-migrate --mark-rolled-back ${file.name} (or prisma migrate resolve --rolled-back ${file.name}).`,
    );
  }
}

/**
 * Marks a failed migration as rolled back (what `prisma migrate resolve --rolled-back` does), so the next
 * applyMigrations retries it. Returns how many rows were marked; throws when there is no such failed migration.
 */
export async function markMigrationRolledBack(opts: { databaseUrl: string; migrationName: string }): Promise<number> {
  const target = parseTarget(opts.databaseUrl);
  const client = await connect(target.connectionString);
  try {
    if (target.schema !== "public") await client.query(`SET search_path TO ${quoteIdent(target.schema)}`);
    const r = await client.query(
      "UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = $1 AND finished_at IS NULL AND rolled_back_at IS NULL",
      [opts.migrationName],
    );
    if (!r.rowCount) throw new MigrationError(`no failed migration named ${opts.migrationName} in ${target.database}`);
    return r.rowCount;
  } finally {
    await client.end().catch(() => {});
  }
}
