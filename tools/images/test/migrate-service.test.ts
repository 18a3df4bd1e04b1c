// `luna-migrate --service NAME`: the migrations the luna/migrate image ships at services/NAME/prisma/migrations
// (beside the runner, /app in the image), applied to a real Postgres; a second run is a no-op.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTestDatabase } from "@luna/kit/testing";
import { afterAll, describe, expect, it } from "vitest";
import type { CliIo } from "../../devstack/src/cli-io.js";
import { knownServices, runMigrateCli, serviceMigrationsDir } from "../../devstack/src/migrate-command.js";

function capture(env: NodeJS.ProcessEnv = {}): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { env, stdout, stderr, out: (l) => stdout.push(l), err: (l) => stderr.push(l) };
}

const fake = mkdtempSync(join(tmpdir(), "luna-migrate-service-"));
afterAll(() => rmSync(fake, { recursive: true, force: true }));

describe("luna-migrate --service", () => {
  it("knows every service of this repository that has migrations", () => {
    expect(knownServices()).toEqual(["auth", "billing", "chat-router", "image-job", "model-registry"]);
    expect(serviceMigrationsDir("billing")).toMatch(/services\/billing\/prisma\/migrations$/);
    expect(serviceMigrationsDir("nope")).toBeUndefined();
  });

  it("applies a service's shipped migrations, then a second run is a no-op", async () => {
    mkdirSync(join(fake, "services/demo/prisma/migrations/20250101000000_init"), { recursive: true });
    writeFileSync(join(fake, "services/demo/prisma/migrations/20250101000000_init/migration.sql"), "CREATE TABLE demo (id int PRIMARY KEY);\n");
    const db = await createTestDatabase();
    try {
      const first = capture({ DATABASE_URL: db.url });
      expect(await runMigrateCli(["--service", "demo"], first, fake)).toBe(0);
      expect(first.stdout.join("\n")).toContain("applying 20250101000000_init");
      const second = capture({ DATABASE_URL: db.url });
      expect(await runMigrateCli(["--service", "demo"], second, fake)).toBe(0);
      expect(second.stdout.join("\n")).toContain("no pending migrations");
    } finally {
      await db.drop();
    }
  });

  it("refuses an unknown service (naming the known ones) and --dir with --service, exit 2", async () => {
    const unknown = capture();
    expect(await runMigrateCli(["--database-url", "postgresql://x/y", "--service", "payments"], unknown)).toBe(2);
    expect(unknown.stderr.join("\n")).toMatch(/unknown --service "payments"; known: auth, billing, chat-router, image-job, model-registry/);
    const none = capture();
    expect(await runMigrateCli(["--database-url", "postgresql://x/y", "--service", "auth"], none, join(fake, "empty"))).toBe(2);
    expect(none.stderr.join("\n")).toMatch(/known: \(none shipped here\)/);
    const both = capture();
    expect(await runMigrateCli(["--database-url", "postgresql://x/y", "--service", "auth", "--dir", "/tmp"], both)).toBe(2);
    expect(both.stderr.join("\n")).toMatch(/--dir or --service, not both/);
  });
});
