#!/usr/bin/env -S tsx --conditions=luna-source
// luna-migrate: offline `prisma migrate deploy` (see migrate-command.ts). The luna/migrate image runs the compiled
// dist/migrate-cli.js with plain node.
import { runMigrateCli } from "./migrate-command.js";

process.exitCode = await runMigrateCli(process.argv.slice(2));
