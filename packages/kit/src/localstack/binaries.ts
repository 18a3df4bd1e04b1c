import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants, readdirSync } from "node:fs";
import { delimiter, join } from "node:path";
import { silentLog, type LocalLog } from "./types.js";

/** Where the server binaries live. */
export interface ServerBinaries {
  /** Directory holding `postgres` and `initdb`. */
  pgBinDir: string;
  redisServer: string;
  natsServer: string;
}

export type MissingServer = "postgres" | "redis" | "nats";

export interface FindBinariesOptions {
  /** Use this directory for `postgres`/`initdb` instead of searching. */
  pgBinDir?: string;
}

// sbin directories are often not on a non-root PATH, and Debian puts nats-server in /usr/sbin.
const EXTRA_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/opt/homebrew/bin"];

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Finds an executable on PATH (plus the usual sbin directories). */
export function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

function hasPgServer(dir: string): boolean {
  return isExecutable(join(dir, "postgres")) && isExecutable(join(dir, "initdb"));
}

/** Sorts "postgresql@16"/"15"-style names by their major version, newest first. */
function byVersionDesc(names: string[]): string[] {
  const version = (n: string) => Number(/(\d+)(?:\.\d+)?$/.exec(n)?.[1] ?? 0);
  return [...names].sort((a, b) => version(b) - version(a));
}

function listDirs(parent: string, filter: (name: string) => boolean): string[] {
  try {
    return readdirSync(parent).filter(filter);
  } catch {
    return [];
  }
}

/**
 * Finds the directory with the Postgres server binaries: the given directory, `pg_config --bindir`,
 * the newest /usr/lib/postgresql/<v>/bin (Debian/Ubuntu), Homebrew's postgresql@<v>, then PATH.
 */
export function findPgBinDir(opts: FindBinariesOptions = {}): string | undefined {
  if (opts.pgBinDir) return hasPgServer(opts.pgBinDir) ? opts.pgBinDir : undefined;
  const pgConfig = which("pg_config");
  if (pgConfig) {
    const r = spawnSync(pgConfig, ["--bindir"], { encoding: "utf8" });
    const dir = r.status === 0 ? r.stdout.trim() : "";
    if (dir && hasPgServer(dir)) return dir;
  }
  for (const v of byVersionDesc(listDirs("/usr/lib/postgresql", (n) => /^\d+(\.\d+)?$/.test(n)))) {
    const dir = join("/usr/lib/postgresql", v, "bin");
    if (hasPgServer(dir)) return dir;
  }
  for (const prefix of ["/opt/homebrew/opt", "/usr/local/opt"]) {
    for (const keg of byVersionDesc(listDirs(prefix, (n) => /^postgresql(@\d+)?$/.test(n)))) {
      const dir = join(prefix, keg, "bin");
      if (hasPgServer(dir)) return dir;
    }
  }
  const postgres = which("postgres");
  if (postgres) {
    const dir = postgres.slice(0, postgres.length - "/postgres".length);
    if (hasPgServer(dir)) return dir;
  }
  return undefined;
}

/** Finds all three servers; `missing` names the ones not found. */
export function findServerBinaries(opts: FindBinariesOptions = {}): {
  found: Partial<ServerBinaries>;
  missing: MissingServer[];
} {
  const found: Partial<ServerBinaries> = {
    pgBinDir: findPgBinDir(opts),
    redisServer: which("redis-server"),
    natsServer: which("nats-server"),
  };
  const missing: MissingServer[] = [];
  if (!found.pgBinDir) missing.push("postgres");
  if (!found.redisServer) missing.push("redis");
  if (!found.natsServer) missing.push("nats");
  return { found, missing };
}

const APT_PACKAGES: Record<MissingServer, string> = { postgres: "postgresql", redis: "redis-server", nats: "nats-server" };
const BREW_PACKAGES: Record<MissingServer, string> = { postgres: "postgresql@16", redis: "redis", nats: "nats-server" };

/** What ensureServerBinaries would run to install missing servers, or why it cannot. */
export type InstallPlan =
  | { kind: "none" }
  | { kind: "apt"; sudo: boolean; packages: string[] }
  | { kind: "brew"; packages: string[] }
  | { kind: "impossible"; message: string };

export interface InstallEnvironment {
  platform: NodeJS.Platform;
  isRoot: boolean;
  hasAptGet: boolean;
  /** Passwordless sudo works (`sudo -n true`). */
  hasSudo: boolean;
  hasBrew: boolean;
}

/** The error text telling a person what to install. */
export function manualInstructions(missing: MissingServer[]): string {
  const names = missing.map((m) => ({ postgres: "PostgreSQL server", redis: "redis-server", nats: "nats-server" })[m]);
  return (
    `Missing local server binaries: ${names.join(", ")}. Install them and retry: ` +
    `Debian/Ubuntu: sudo apt-get install -y ${missing.map((m) => APT_PACKAGES[m]).join(" ")}; ` +
    `macOS: brew install ${missing.map((m) => BREW_PACKAGES[m]).join(" ")}; ` +
    `elsewhere: put postgres/initdb (or pg_config), redis-server and nats-server on PATH.`
  );
}

/** Decides how to install the missing servers on this platform (pure, so it is testable). */
export function planInstall(missing: MissingServer[], env: InstallEnvironment): InstallPlan {
  if (missing.length === 0) return { kind: "none" };
  const manual = manualInstructions(missing);
  if (env.platform === "linux" && env.hasAptGet) {
    if (env.isRoot || env.hasSudo) {
      return { kind: "apt", sudo: !env.isRoot, packages: missing.map((m) => APT_PACKAGES[m]) };
    }
    return { kind: "impossible", message: `${manual} (not root and no passwordless sudo, so they were not installed automatically)` };
  }
  if (env.platform === "darwin" && env.hasBrew) return { kind: "brew", packages: missing.map((m) => BREW_PACKAGES[m]) };
  return { kind: "impossible", message: manual };
}

function detectEnvironment(): InstallEnvironment {
  const sudo = which("sudo");
  return {
    platform: process.platform,
    isRoot: process.getuid?.() === 0,
    hasAptGet: which("apt-get") !== undefined,
    hasSudo: sudo !== undefined && spawnSync(sudo, ["-n", "true"], { stdio: "ignore" }).status === 0,
    hasBrew: which("brew") !== undefined,
  };
}

function run(command: string, args: string[], log: LocalLog, env?: NodeJS.ProcessEnv): Promise<void> {
  log.info(`$ ${command} ${args.join(" ")}`);
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    let output = "";
    const collect = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-4000);
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(" ")} failed with exit code ${code}:\n${output}`));
    });
  });
}

let aptUpdated = false;

/**
 * Makes sure postgres/initdb, redis-server and nats-server exist, installing what is missing:
 * Debian/Ubuntu with apt-get (as root, or with passwordless sudo), macOS with Homebrew. Elsewhere, or without
 * permission, it throws an error naming what to install. Returns where the binaries are.
 */
export async function ensureServerBinaries(log: LocalLog = silentLog, opts: FindBinariesOptions = {}): Promise<ServerBinaries> {
  const first = findServerBinaries(opts);
  if (first.missing.length === 0) return first.found as ServerBinaries;
  const plan = planInstall(first.missing, detectEnvironment());
  log.info(`local servers missing: ${first.missing.join(", ")}`);
  switch (plan.kind) {
    case "none":
      break;
    case "impossible":
      throw new Error(plan.message);
    case "apt": {
      const prefix = plan.sudo ? ["-n", "apt-get"] : [];
      const cmd = plan.sudo ? "sudo" : "apt-get";
      // Other processes (a parallel test run) may hold the dpkg lock: wait for it rather than failing at once.
      const lockWait = ["-o", "DPkg::Lock::Timeout=300"];
      const env = { DEBIAN_FRONTEND: "noninteractive" };
      if (!aptUpdated) {
        await run(cmd, [...prefix, ...lockWait, "update"], log, env);
        aptUpdated = true;
      }
      await run(cmd, [...prefix, ...lockWait, "install", "-y", "--no-install-recommends", ...plan.packages], log, env);
      break;
    }
    case "brew":
      await run("brew", ["install", ...plan.packages], log);
      break;
  }
  const second = findServerBinaries(opts);
  if (second.missing.length > 0) {
    throw new Error(`The install finished but these are still not found. ${manualInstructions(second.missing)}`);
  }
  log.info("local servers installed");
  return second.found as ServerBinaries;
}
