// `luna-devstack up|down|status|url` (src/cli.ts) as a function, so tests can run it in-process.
import { relative } from "node:path";
import { processIo, type CliIo } from "./cli-io.js";
import { DEV_STACK_ENV, devStackConfig } from "./config.js";
import { devStackStatus, devStackUrls, serverDirs, startDevStack, stopDevStack } from "./index.js";

const DEVSTACK_USAGE = `usage: luna-devstack <command>

  up       start Postgres, Redis and NATS JetStream (installs missing binaries; reuses running servers)
  down     stop them (data is kept)
  status   show which run and answer (exit code 1 when not all are healthy)
  url      print DATABASE_URL_BASE, REDIS_URL, NATS_URL and NATS_MONITOR_URL as env lines

environment:
${Object.entries(DEV_STACK_ENV).map(([name, what]) => `  ${name.padEnd(24)}${what}`).join("\n")}`;

const NAMES = { postgres: "Postgres", redis: "Redis", nats: "NATS" } as const;

/** Runs `luna-devstack <command>`; returns the exit code. */
export async function runDevStackCli(args: string[], io: CliIo = processIo): Promise<number> {
  const [command, ...rest] = args;
  if (!command || command === "help" || command === "--help" || command === "-h") {
    (command ? io.out : io.err)(DEVSTACK_USAGE);
    return command ? 0 : 2;
  }
  if (rest.length > 0 || !["up", "down", "status", "url"].includes(command)) {
    io.err(`luna-devstack: unknown command ${JSON.stringify(args.join(" "))}\n\n${DEVSTACK_USAGE}`);
    return 2;
  }
  let config;
  try {
    config = devStackConfig(io.env);
  } catch (err) {
    io.err(`luna-devstack: ${(err as Error).message}`);
    return 2;
  }
  const { dataDir, ports } = config;
  const shown = relative(process.cwd(), dataDir) || ".";
  try {
    switch (command) {
      case "up": {
        io.out(`starting the Luna dev stack (data in ${shown})`);
        const stack = await startDevStack({ dataDir, ports, log: { info: (m) => io.out(`  ${m}`), warn: (m) => io.err(`  ${m}`) } });
        const dirs = serverDirs(dataDir);
        io.out("");
        io.out("Luna dev stack is up:");
        io.out(`  Postgres  ${stack.urls.databaseUrlBase}/<database>   log ${relative(process.cwd(), dirs.postgres)}/postgres.log`);
        io.out(`  Redis     ${stack.urls.redisUrl}`);
        io.out(`  NATS      ${stack.urls.natsUrl}   monitoring ${stack.urls.natsMonitorUrl}`);
        io.out("Stop it with: luna-devstack down");
        return 0;
      }
      case "down": {
        const stopped = await stopDevStack(dataDir);
        for (const kind of ["postgres", "redis", "nats"] as const) {
          io.out(`${NAMES[kind]}: ${stopped.includes(kind) ? "stopped" : "was not running"}`);
        }
        return 0;
      }
      case "status": {
        const statuses = await devStackStatus(dataDir);
        for (const s of statuses) {
          const state = !s.running ? "not running" : s.healthy ? "running" : `running but not answering (${s.detail})`;
          io.out(`${NAMES[s.kind].padEnd(9)} ${state}${s.running ? `  pid ${s.pid}, port ${s.ports!.join("/")}` : ""}`);
        }
        return statuses.every((s) => s.healthy) ? 0 : 1;
      }
      default: {
        const urls = devStackUrls(ports);
        io.out(`DATABASE_URL_BASE=${urls.databaseUrlBase}`);
        io.out(`REDIS_URL=${urls.redisUrl}`);
        io.out(`NATS_URL=${urls.natsUrl}`);
        io.out(`NATS_MONITOR_URL=${urls.natsMonitorUrl}`);
        return 0;
      }
    }
  } catch (err) {
    io.err(`luna-devstack ${command}: ${(err as Error).message}`);
    return 1;
  }
}

