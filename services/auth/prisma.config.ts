import { defineConfig } from "prisma/config";

// Used by `prisma generate` (offline, see tools/devstack/src/prisma-generate.mjs). Migrations are applied by the
// kit's applyMigrations, compatible with `prisma migrate deploy`.
export default defineConfig({
  schema: "prisma/schema.prisma",
  migrations: { path: "prisma/migrations" },
  datasource: { url: process.env.DATABASE_URL ?? "postgresql://localhost/unused" },
});
