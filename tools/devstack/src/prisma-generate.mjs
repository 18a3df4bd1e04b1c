#!/usr/bin/env node
// Runs `prisma generate` for every service that has a prisma/schema.prisma, offline.
// Prisma's CLI wants a native schema-engine binary even though generating the client does not use it; pointing
// PRISMA_SCHEMA_ENGINE_BINARY at any existing file stops it from trying to download one (see REFERENCE.md).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "../../..");
const only = process.argv.slice(2);
const services = readdirSync(join(root, "services")).filter(
  (s) => existsSync(join(root, "services", s, "prisma", "schema.prisma")) && (only.length === 0 || only.includes(s)),
);
const env = { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: process.env.PRISMA_SCHEMA_ENGINE_BINARY ?? process.execPath,
  PRISMA_HIDE_UPDATE_MESSAGE: "1", CHECKPOINT_DISABLE: "1" };
for (const s of services) {
  const cwd = join(root, "services", s);
  const r = spawnSync(process.execPath, [join(root, "node_modules/prisma/build/index.js"), "generate"], { cwd, env, encoding: "utf8" });
  if (r.status !== 0) {
    process.stderr.write(`prisma generate failed for services/${s}:\n${r.stdout}${r.stderr}`);
    process.exit(1);
  }
  process.stdout.write(`prisma client generated for services/${s}\n`);
}
