// `luna-migrate` (src/migrate-cli.ts) as a function, so tests can run it in-process. Kept apart from the dev stack
// so container images that only migrate load nothing but the runner and pg.
import { applyMigrations, markMigrationRolledBack, MigrationError } from "@luna/kit/migrate";
import { existsSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { processIo, type CliIo } from "./cli-io.js";

/**
 * Where `--service NAME` looks: <root>/services/NAME/prisma/migrations, root being the repository in a checkout
 * (src/ or dist/ is three levels down) and /app in the luna/migrate image, which ships the migrations at that path.
 */
export const DEFAULT_MIGRATIONS_ROOT = resolve(import.meta.dirname, "../../..");

/** The services whose migrations are present under root, sorted. */
export function knownServices(root: string = DEFAULT_MIGRATIONS_ROOT): string[] {
  const dir = join(root, "services");
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((s) => existsSync(join(dir, s, "prisma", "migrations"))).sort();
}

/** The migrations directory of a service, or undefined when root ships none for that name. */
export function serviceMigrationsDir(service: string, root: string = DEFAULT_MIGRATIONS_ROOT): string | undefined {
  return knownServices(root).includes(service) ? join(root, "services", service, "prisma", "migrations") : undefined;
}

const MIGRATE_USAGE = `usage: luna-migrate --database-url URL --dir MIGRATIONS_DIR [--no-create-db] [--lock-timeout-ms N]
       luna-migrate --database-url URL --service NAME [--no-create-db] [--lock-timeout-ms N]
       luna-migrate --database-url URL --mark-rolled-back MIGRATION_NAME

Applies prisma/migrations/<timestamp>_<name>/migration.sql that the database has not recorded yet, recording them
in _prisma_migrations exactly as \`prisma migrate deploy\` does (works offline, no schema engine).
--service NAME applies the migrations shipped for that service (services/NAME/prisma/migrations beside the runner;
in the luna/migrate image: auth, billing, chat-router, image-job, model-registry).
--database-url defaults to $DATABASE_URL. The database is created when missing unless --no-create-db.
--mark-rolled-back marks a failed migration as rolled back so the next run retries it.`;

/** Runs `luna-migrate`; returns the exit code (0 ok, 1 migration refused or failed, 2 usage). */
export async function runMigrateCli(args: string[], io: CliIo = processIo, migrationsRoot: string = DEFAULT_MIGRATIONS_ROOT): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        "database-url": { type: "string" },
        dir: { type: "string" },
        service: { type: "string" },
        "no-create-db": { type: "boolean", default: false },
        "lock-timeout-ms": { type: "string" },
        "mark-rolled-back": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    io.err(`luna-migrate: ${(err as Error).message}\n\n${MIGRATE_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(MIGRATE_USAGE);
    return 0;
  }
  const databaseUrl = values["database-url"] ?? io.env.DATABASE_URL;
  if (!databaseUrl) {
    io.err(`luna-migrate: --database-url (or DATABASE_URL) is required\n\n${MIGRATE_USAGE}`);
    return 2;
  }
  let lockTimeoutMs: number | undefined;
  if (values["lock-timeout-ms"] !== undefined) {
    lockTimeoutMs = Number(values["lock-timeout-ms"]);
    if (!Number.isInteger(lockTimeoutMs) || lockTimeoutMs < 1) {
      io.err(`luna-migrate: --lock-timeout-ms must be a positive integer (milliseconds)`);
      return 2;
    }
  }
  const log = { info: (m: string) => io.out(m), warn: (m: string) => io.err(`warning: ${m}`) };
  try {
    if (values["mark-rolled-back"]) {
      await markMigrationRolledBack({ databaseUrl, migrationName: values["mark-rolled-back"] });
      io.out(`marked ${values["mark-rolled-back"]} as rolled back; the next run applies it again`);
      return 0;
    }
    if (values.dir !== undefined && values.service !== undefined) {
      io.err(`luna-migrate: give --dir or --service, not both\n\n${MIGRATE_USAGE}`);
      return 2;
    }
    let migrationsDir = values.dir;
    if (values.service !== undefined) {
      migrationsDir = serviceMigrationsDir(values.service, migrationsRoot);
      if (!migrationsDir) {
        const known = knownServices(migrationsRoot);
        io.err(`luna-migrate: unknown --service ${JSON.stringify(values.service)}; known: ${known.join(", ") || "(none shipped here)"}`);
        return 2;
      }
    }
    if (!migrationsDir) {
      io.err(`luna-migrate: --dir is required (or --service NAME)\n\n${MIGRATE_USAGE}`);
      return 2;
    }
    await applyMigrations({ databaseUrl, migrationsDir, createDatabase: !values["no-create-db"], lockTimeoutMs, log });
    return 0;
  } catch (err) {
    io.err(err instanceof MigrationError ? `luna-migrate: ${err.message}` : `luna-migrate: ${(err as Error).message ?? err}`);
    return 1;
  }
}
