import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, chownSync, existsSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import pg from "pg";
import { findPgBinDir, manualInstructions, which } from "./binaries.js";
import { ServerProcess, wrapCommand, type RunAs } from "./managed.js";
import { silentLog, type LocalLog, type ManagedServer, type ServerOptions } from "./types.js";

export interface PostgresOptions extends ServerOptions {
  /** Superuser created by initdb; trust auth on 127.0.0.1, no password. Default "luna". */
  user?: string;
  /** Default 300: room for concurrency tests and for every service's pool in the all-in-one process. */
  maxConnections?: number;
  /** Directory with postgres/initdb; default: found by findPgBinDir. */
  pgBinDir?: string;
  /**
   * Create a new cluster by copying a cached initdb result from the temp dir instead of running initdb.
   * Default: on unless `durable` (tests; initdb takes seconds on a busy machine).
   */
  initdbCache?: boolean;
  /** Extra server settings passed as `-c name=value`. */
  settings?: Record<string, string | number>;
}

export interface PostgresServer extends ManagedServer {
  /** The superuser name used in url(). */
  readonly user: string;
  /** Connection URL for database `db` on this server. */
  url(db: string): string;
}

export const DEFAULT_PG_USER = "luna";
export const DEFAULT_PG_MAX_CONNECTIONS = 300;
/** OS user created to run Postgres when running as root and no `postgres` user exists. */
const FALLBACK_OS_USER = "luna";
// A Unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux, 104 on macOS).
const MAX_SOCKET_PATH = 100;

function lookupUser(name: string): RunAs | undefined {
  const uid = spawnSync("id", ["-u", name], { encoding: "utf8" });
  const gid = spawnSync("id", ["-g", name], { encoding: "utf8" });
  if (uid.status !== 0 || gid.status !== 0) return undefined;
  return { user: name, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/**
 * Postgres refuses to run as root. As root, run it as the `postgres` system user (Debian's package creates it),
 * or create a `luna` system user when there is none.
 */
function resolveRunUser(log: LocalLog): RunAs | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const existing = lookupUser("postgres") ?? lookupUser(FALLBACK_OS_USER);
  if (existing) return existing;
  const useradd = which("useradd");
  if (!useradd) throw new Error("running as root: Postgres needs an unprivileged user, and useradd was not found to create one");
  log.info(`creating system user ${FALLBACK_OS_USER} to run Postgres (it refuses to run as root)`);
  const r = spawnSync(useradd, ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", FALLBACK_OS_USER], {
    encoding: "utf8",
  });
  const created = lookupUser(FALLBACK_OS_USER);
  if (!created) throw new Error(`could not create system user ${FALLBACK_OS_USER}: ${r.stderr}`);
  return created;
}

/** Runs initdb into dir (empty, owned by runAs) and allows only local, password-less connections. */
function initCluster(dir: string, binDir: string, user: string, runAs: RunAs | undefined, noSync: boolean): void {
  const initArgs = ["-D", dir, "-U", user, "--auth=trust", "--encoding=UTF8", "--no-locale"];
  if (noSync) initArgs.push("--no-sync");
  const init = runSync(join(binDir, "initdb"), initArgs, runAs);
  if (!init.ok) throw new Error(`initdb failed for ${dir}:\n${init.output}`);
  // This server is for development and tests: trust, but only on the loopback address and the Unix socket.
  const hba = join(dir, "pg_hba.conf");
  writeFileSync(hba, "# written by @luna/kit/localstack\nlocal all all trust\nhost all all 127.0.0.1/32 trust\n");
  if (runAs) chownSync(hba, runAs.uid, runAs.gid);
}

/**
 * A freshly initdb'ed cluster cached in the temp dir, keyed by the initdb binary, superuser and owner: copying it
 * takes a fraction of a second where initdb takes seconds on a busy machine. Built once, atomically (rename).
 */
function ensureTemplate(binDir: string, user: string, runAs: RunAs | undefined, log: LocalLog): string {
  const initdb = statSync(join(binDir, "initdb"));
  const owner = runAs?.uid ?? process.getuid?.() ?? 0;
  const key = createHash("sha256").update([binDir, initdb.size, initdb.mtimeMs, user, owner].join("|")).digest("hex").slice(0, 16);
  const dir = join(tmpdir(), `luna-pg-template-${key}`);
  if (existsSync(join(dir, "global", "pg_control"))) return dir;
  log.info(`initializing a cached Postgres cluster in ${dir}`);
  const building = `${dir}.building-${process.pid}-${randomBytes(4).toString("hex")}`;
  mkdirSync(building, { mode: 0o700 });
  try {
    if (runAs) chownSync(building, runAs.uid, runAs.gid);
    initCluster(building, binDir, user, runAs, true);
    renameSync(building, dir);
  } catch (err) {
    rmSync(building, { recursive: true, force: true });
    // Losing the rename race to a concurrent run is fine: its template is just as good.
    if (!existsSync(join(dir, "global", "pg_control"))) throw err;
  }
  return dir;
}

/** The nearest ancestor of dir without the "others may traverse" bit, if any. */
function untraversableAncestor(dir: string): string | undefined {
  for (let d = dirname(resolve(dir)); ; d = dirname(d)) {
    try {
      if ((statSync(d).mode & 0o001) === 0) return d;
    } catch {
      return d;
    }
    if (d === dirname(d)) return undefined;
  }
}

function runSync(command: string, args: string[], runAs: RunAs | undefined): { ok: boolean; output: string } {
  const wrapped = wrapCommand(command, args, runAs, undefined);
  const r = spawnSync(wrapped.command, wrapped.args, { encoding: "utf8" });
  return { ok: r.status === 0, output: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? r.error.message : ""}` };
}

async function probe(port: number, user: string): Promise<void> {
  const client = new pg.Client({ host: "127.0.0.1", port, user, database: "postgres", connectionTimeoutMillis: 2_000 });
  // A failed connect emits 'error' as well as rejecting; keep it from becoming an uncaught exception.
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("SELECT 1");
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Starts (or adopts, when one already runs from `dataDir`) a Postgres server on 127.0.0.1 with trust auth.
 * Layout: `<dataDir>/pgdata` (cluster, created by initdb on first start; Unix socket inside it),
 * `<dataDir>/postgres.log`. Tests: fsync, synchronous_commit and full_page_writes off unless `durable`.
 */
export async function startPostgres(opts: PostgresOptions): Promise<PostgresServer> {
  const log = opts.log ?? silentLog;
  const user = opts.user ?? DEFAULT_PG_USER;
  const binDir = findPgBinDir({ pgBinDir: opts.pgBinDir });
  if (!binDir) throw new Error(manualInstructions(["postgres"]));
  const dataDir = opts.dataDir;
  const pgdata = join(dataDir, "pgdata");
  const runAs = resolveRunUser(log);

  const prepare = async () => {
    mkdirSync(pgdata, { recursive: true });
    if (runAs) {
      // The unprivileged user must reach pgdata: make the data dir traversable (not listable) and hand pgdata over.
      chmodSync(dataDir, (statSync(dataDir).mode & 0o7777) | 0o711);
      chownSync(pgdata, runAs.uid, runAs.gid);
      if (!runSync("test", ["-w", pgdata], runAs).ok) {
        const blocking = untraversableAncestor(dataDir);
        throw new Error(
          `the ${runAs.user} user (Postgres refuses to run as root) cannot write ${pgdata}: ` +
            (blocking ? `${blocking} is not traversable by others (chmod o+x ${blocking})` : `make every parent directory traversable`) +
            `, or choose another data dir`,
        );
      }
    }
    chmodSync(pgdata, 0o700);
    if (existsSync(join(pgdata, "PG_VERSION"))) return;
    if (opts.initdbCache ?? !opts.durable) {
      const template = ensureTemplate(binDir, user, runAs, log);
      // cp -a keeps owners and modes, so the copy is a valid cluster for runAs.
      const copy = spawnSync("cp", ["-a", `${template}/.`, `${pgdata}/`], { encoding: "utf8" });
      if (copy.status === 0) return;
      log.warn(`copying the cached cluster failed (${copy.stderr.trim()}); running initdb instead`);
      rmSync(pgdata, { recursive: true, force: true });
      mkdirSync(pgdata, { mode: 0o700 });
      if (runAs) chownSync(pgdata, runAs.uid, runAs.gid);
    }
    log.info(`initializing a Postgres cluster in ${pgdata}`);
    initCluster(pgdata, binDir, user, runAs, !opts.durable);
  };

  const server = await ServerProcess.start({
    kind: "postgres",
    dataDir,
    logFile: join(dataDir, "postgres.log"),
    requestedPorts: [opts.port],
    prepare,
    command: ([port]) => {
      const socketDir = `${pgdata}/.s.PGSQL.${port}`.length <= MAX_SOCKET_PATH ? pgdata : "";
      const settings: Record<string, string | number> = {
        listen_addresses: "127.0.0.1",
        unix_socket_directories: socketDir,
        max_connections: opts.maxConnections ?? DEFAULT_PG_MAX_CONNECTIONS,
        ...(opts.durable ? {} : { fsync: "off", synchronous_commit: "off", full_page_writes: "off" }),
        ...opts.settings,
      };
      const args = ["-D", pgdata, "-p", String(port)];
      for (const [k, v] of Object.entries(settings)) args.push("-c", `${k}=${v}`);
      return { command: join(binDir, "postgres"), args };
    },
    runAs,
    probe: ([port]) => probe(port!, user),
    stopSignal: "SIGINT", // "fast" shutdown: disconnect clients, checkpoint, exit
    exitSignal: "SIGQUIT", // "immediate" shutdown: for throwaway test clusters when this process exits
    keepRunning: opts.keepRunning ?? false,
    readyTimeoutMs: opts.readyTimeoutMs,
    stopTimeoutMs: opts.stopTimeoutMs,
    log,
  });

  return Object.assign(server, {
    user,
    url: (db: string) => `postgresql://${encodeURIComponent(user)}@127.0.0.1:${server.port}/${encodeURIComponent(db)}`,
  });
}
