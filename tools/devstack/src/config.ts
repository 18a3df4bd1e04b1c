import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

/** Ports of the dev stack on 127.0.0.1. */
export interface DevStackPorts {
  postgres: number;
  redis: number;
  nats: number;
  natsMonitor: number;
}

export interface DevStackConfig {
  /** Root of the servers' data: `<dataDir>/{postgres,redis,nats}`. */
  dataDir: string;
  ports: DevStackPorts;
}

/** Defaults chosen away from the usual system services (5432, 6379, 4222, 8222) so both can run side by side. */
export const DEFAULT_PORTS: DevStackPorts = { postgres: 54329, redis: 63799, nats: 42229, natsMonitor: 8229 };

/** Environment variables read by devStackConfig, with what they set. */
export const DEV_STACK_ENV = {
  LUNA_DATA_DIR: "data directory (default <repo>/.luna)",
  LUNA_PG_PORT: `Postgres port (default ${DEFAULT_PORTS.postgres})`,
  LUNA_REDIS_PORT: `Redis port (default ${DEFAULT_PORTS.redis})`,
  LUNA_NATS_PORT: `NATS client port (default ${DEFAULT_PORTS.nats})`,
  LUNA_NATS_MONITOR_PORT: `NATS HTTP monitoring port (default ${DEFAULT_PORTS.natsMonitor})`,
} as const;

/** The monorepo root: the nearest folder above `from` whose package.json declares workspaces. */
export function findRepoRoot(from: string = import.meta.dirname): string {
  for (let dir = resolve(from); ; dir = dirname(dir)) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, "utf8")) as { workspaces?: unknown }).workspaces) return dir;
      } catch {
        // unreadable package.json: keep looking upwards
      }
    }
    if (dir === dirname(dir)) throw new Error(`cannot find the Luna repository root above ${from}`);
  }
}

function port(env: NodeJS.ProcessEnv, name: keyof typeof DEV_STACK_ENV, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new Error(`${name} must be a port number between 1 and 65535, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/** Reads the dev stack's settings from the environment (see DEV_STACK_ENV); throws naming a bad variable. */
export function devStackConfig(env: NodeJS.ProcessEnv = process.env, repoRoot?: string): DevStackConfig {
  const ports: DevStackPorts = {
    postgres: port(env, "LUNA_PG_PORT", DEFAULT_PORTS.postgres),
    redis: port(env, "LUNA_REDIS_PORT", DEFAULT_PORTS.redis),
    nats: port(env, "LUNA_NATS_PORT", DEFAULT_PORTS.nats),
    natsMonitor: port(env, "LUNA_NATS_MONITOR_PORT", DEFAULT_PORTS.natsMonitor),
  };
  const seen = new Map<number, string>();
  for (const [name, value] of Object.entries(ports)) {
    const other = seen.get(value);
    if (other) throw new Error(`the ${other} and ${name} ports are both ${value}; give each server its own port`);
    seen.set(value, name);
  }
  const dataDir = env.LUNA_DATA_DIR ? resolve(env.LUNA_DATA_DIR) : join(repoRoot ?? findRepoRoot(), ".luna");
  return { dataDir, ports };
}
