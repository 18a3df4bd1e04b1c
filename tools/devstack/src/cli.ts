#!/usr/bin/env -S tsx --conditions=luna-source
// luna-devstack up|down|status|url: the local Postgres, Redis and NATS for development (see commands.ts).
import { runDevStackCli } from "./commands.js";

process.exitCode = await runDevStackCli(process.argv.slice(2));
