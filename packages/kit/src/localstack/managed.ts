import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, realpathSync, rmSync, fstatSync, writeFileSync, writeSync } from "node:fs";
import net from "node:net";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { which } from "./binaries.js";
import { DEFAULT_READY_TIMEOUT_MS, DEFAULT_STOP_TIMEOUT_MS, silentLog, type LocalLog, type ManagedServer, type ServerKind } from "./types.js";

export interface RunAs {
  user: string;
  uid: number;
  gid: number;
}

/** How a server is launched and checked; one per server kind. */
export interface ServerSpec {
  kind: ServerKind;
  dataDir: string;
  logFile: string;
  /** Requested ports (undefined = pick a free one). Index 0 is the client port. */
  requestedPorts: (number | undefined)[];
  /** One-time setup before the first start (e.g. initdb); runs before every start, so it must be idempotent. */
  prepare?(ports: number[]): Promise<void>;
  command(ports: number[]): { command: string; args: string[]; env?: NodeJS.ProcessEnv };
  /** User to run the server as (Postgres refuses to run as root). */
  runAs?: RunAs;
  /** Resolves once the server accepts clients; throws while it does not. */
  probe(ports: number[]): Promise<void>;
  /** Graceful stop signal. */
  stopSignal: NodeJS.Signals;
  /** Signal sent when this process exits or dies while it owns the server: fast, no cleanup needed. */
  exitSignal: NodeJS.Signals;
  keepRunning: boolean;
  readyTimeoutMs?: number;
  stopTimeoutMs?: number;
  log?: LocalLog;
}

/** Contents of `<dataDir>/luna-server.json`, written once a server is ready, removed when it stops. */
interface StateFile {
  kind: ServerKind;
  pid: number;
  ports: number[];
  startedAt: string;
}

const STATE_FILE = "luna-server.json";
const PROBE_INTERVAL_MS = 100;

export function readServerState(dataDir: string): StateFile | undefined {
  try {
    const parsed = JSON.parse(readFileSync(join(dataDir, STATE_FILE), "utf8")) as Partial<StateFile>;
    if (typeof parsed.pid !== "number" || !Array.isArray(parsed.ports) || typeof parsed.kind !== "string") return undefined;
    return parsed as StateFile;
  } catch {
    return undefined;
  }
}

/** True while `pid` is a live (not zombie) process. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  if (process.platform === "linux") {
    try {
      // The state is the field after the parenthesised command name.
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      if (state === "Z" || state === "X") return false;
    } catch {
      return false;
    }
  }
  return true;
}

/** Whether pid runs `name` (Linux: from /proc; elsewhere assumed, the pid file is ours). */
function runsProgram(pid: number, name: string): boolean {
  if (process.platform !== "linux") return true;
  try {
    // Redis rewrites its process title ("/usr/bin/redis-server 127.0.0.1:6379"), so match anywhere.
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(name);
  } catch {
    return false;
  }
}

// Checked against the command line of a pid from a state file before adopting it (the pid may have been reused).
const processNames: Record<ServerKind, string> = { postgres: "postgres", redis: "redis-server", nats: "nats-server" };

/**
 * The pid file a server writes itself, relative to its data dir (NATS: `-P`). When the server was restarted by hand
 * with the stack's own command (same data dir, pid file and port), the state file names a dead pid but this names the
 * live one, and the server is adopted instead of being refused as "another process" on the port.
 */
const ownPidFiles: Partial<Record<ServerKind, string>> = { nats: "nats.pid" };

/** TCP ports `pid` listens on (Linux: its socket inodes matched against /proc/net/tcp{,6}); undefined elsewhere. */
export function listeningPorts(pid: number): Set<number> | undefined {
  if (process.platform !== "linux") return undefined;
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]!);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    return undefined;
  }
  const ports = new Set<number>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      // cols: sl, local_address (hex ip:port), rem_address, st (0A = LISTEN), ..., inode at index 9
      if (cols.length > 9 && cols[3] === "0A" && inodes.has(cols[9]!)) ports.add(parseInt(cols[1]!.split(":")[1]!, 16));
    }
  }
  return ports;
}

/** Whether `pid` works in `dataDir`: named on its command line or as its working directory. */
function usesDataDir(pid: number, dataDir: string): boolean {
  if (process.platform !== "linux") return true;
  const dir = resolve(dataDir);
  try {
    if (readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").some((arg) => arg.includes(dir))) return true;
    return realpathSync(`/proc/${pid}/cwd`) === realpathSync(dir);
  } catch {
    return false;
  }
}

/**
 * A live server started by hand from the stack's data dir: the pid in its own pid file runs the right program,
 * works in `dataDir` and listens on `clientPort`.
 */
function findHandStartedServer(dataDir: string, kind: ServerKind, clientPort: number | undefined): number | undefined {
  const pidFile = ownPidFiles[kind];
  if (!pidFile || clientPort === undefined) return undefined;
  let pid: number;
  try {
    pid = Number(readFileSync(join(dataDir, pidFile), "utf8").trim().split(/\s+/)[0]);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid) || !runsProgram(pid, processNames[kind]) || !usesDataDir(pid, dataDir)) return undefined;
  const ports = listeningPorts(pid);
  return ports === undefined || ports.has(clientPort) ? pid : undefined;
}

/**
 * A live server of this data dir: the one its state file records, else one restarted by hand from the stack's own
 * pid file (see ownPidFiles) on the recorded ports (or `expectedPorts` when there is no state file).
 */
export function findRunningServer(dataDir: string, kind: ServerKind, expectedPorts?: (number | undefined)[]): { pid: number; ports: number[]; handStarted?: boolean } | undefined {
  const state = readServerState(dataDir);
  if (state && state.kind === kind && isAlive(state.pid) && runsProgram(state.pid, processNames[kind])) return { pid: state.pid, ports: state.ports };
  const ports = state && state.kind === kind ? state.ports
    : expectedPorts && expectedPorts.every((p) => p !== undefined) ? expectedPorts as number[] : undefined;
  const pid = findHandStartedServer(dataDir, kind, ports?.[0]);
  return pid === undefined ? undefined : { pid, ports: ports!, handStarted: true };
}

/** Free TCP ports on 127.0.0.1, found by binding port 0 (all held until every one is found, so they differ). */
export async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve());
      });
      ports.push((server.address() as net.AddressInfo).port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

/** A free port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}

async function portInUse(port: number): Promise<boolean> {
  const server = net.createServer();
  return new Promise((resolve) => {
    server.once("error", () => resolve(true));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(false)));
  });
}

/** The last `lines` lines of a log file ("" when unreadable). */
export function logTail(file: string, lines = 25): string {
  try {
    const fd = openSync(file, "r");
    try {
      const size = fstatSync(fd).size;
      const length = Math.min(size, 16_384);
      const buf = Buffer.alloc(length);
      readSync(fd, buf, 0, length, size - length);
      return buf.toString("utf8").split("\n").slice(-lines - 1).join("\n").trimEnd();
    } finally {
      closeSync(fd);
    }
  } catch {
    return "";
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    // Servers are started as process-group leaders, so this also reaches their children (Postgres backends).
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

// Servers tied to this process: killed when it exits (the kernel's parent-death signal covers a hard crash).
const owned = new Set<ServerProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const server of owned) server.killNow();
  });
}

/** Wraps the command so it runs as `runAs` and/or dies with this process (Linux: setpriv --pdeathsig). */
export function wrapCommand(
  command: string,
  args: string[],
  runAs: RunAs | undefined,
  deathSignal: NodeJS.Signals | undefined,
): { command: string; args: string[] } {
  const setpriv = process.platform === "linux" ? which("setpriv") : undefined;
  if (setpriv && (runAs || deathSignal)) {
    const pre: string[] = [];
    if (runAs) pre.push(`--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, "--clear-groups");
    // setpriv applies the parent-death signal after switching user, so the switch does not clear it.
    if (deathSignal) pre.push(`--pdeathsig=${deathSignal.replace(/^SIG/, "")}`);
    return { command: setpriv, args: [...pre, "--", command, ...args] };
  }
  if (runAs) {
    const runuser = which("runuser");
    if (!runuser) throw new Error("running a server as another user needs setpriv or runuser (util-linux)");
    return { command: runuser, args: ["-u", runAs.user, "--", command, ...args] };
  }
  return { command, args };
}

/** A server process started (or adopted) from a data dir. */
export class ServerProcess implements ManagedServer {
  readonly kind: ServerKind;
  readonly dataDir: string;
  readonly logFile: string;
  ports: number[] = [];
  reused = false;
  private currentPid: number | undefined;
  private child: ChildProcess | undefined;
  private childExit: Promise<void> | undefined;
  private readonly log: LocalLog;

  private constructor(private readonly spec: ServerSpec) {
    this.kind = spec.kind;
    this.dataDir = spec.dataDir;
    this.logFile = spec.logFile;
    this.log = spec.log ?? silentLog;
  }

  get port(): number {
    return this.ports[0]!;
  }

  get pid(): number | undefined {
    return this.currentPid;
  }

  /** Adopts a live server recorded in the data dir, or starts a new one. */
  static async start(spec: ServerSpec): Promise<ServerProcess> {
    const server = new ServerProcess(spec);
    mkdirSync(spec.dataDir, { recursive: true });
    const running = findRunningServer(spec.dataDir, spec.kind, spec.requestedPorts);
    if (running) {
      spec.requestedPorts.forEach((want, i) => {
        if (want !== undefined && running.ports[i] !== want) {
          throw new Error(
            `${spec.kind} is already running from ${spec.dataDir} (pid ${running.pid}) on port ${running.ports[i]}, ` +
              `not the requested ${want}; stop it first`,
          );
        }
      });
      server.ports = running.ports;
      server.currentPid = running.pid;
      server.reused = true;
      await server.waitReady();
      if (running.handStarted) {
        // From now on it is ours like any other: recorded, so `down`, status and Ctrl-C (when asked to) stop it.
        server.writeState();
        server.log.info(`${spec.kind} restarted outside the stack (pid ${running.pid}) from its data dir on port ${server.port}: adopted`);
      } else {
        server.log.info(`${spec.kind} already running (pid ${running.pid}) on port ${server.port}`);
      }
      return server;
    }
    rmSync(join(spec.dataDir, STATE_FILE), { force: true });
    const missing = spec.requestedPorts.filter((p) => p === undefined).length;
    const free = await freePorts(missing);
    server.ports = spec.requestedPorts.map((p) => p ?? free.shift()!);
    await server.launch();
    return server;
  }

  private async launch(): Promise<void> {
    const { spec } = this;
    for (const port of this.ports) {
      if (await portInUse(port)) {
        throw new Error(`cannot start ${spec.kind}: port ${port} on 127.0.0.1 is already in use by another process`);
      }
    }
    await spec.prepare?.(this.ports);
    const base = spec.command(this.ports);
    const { command, args } = wrapCommand(base.command, base.args, spec.runAs, spec.keepRunning ? undefined : spec.exitSignal);
    const fd = openSync(spec.logFile, "a");
    let child: ChildProcess;
    try {
      writeSync(fd, `\n--- ${new Date().toISOString()} starting ${spec.kind}: ${base.command} ${base.args.join(" ")}\n`);
      // detached: the server leads its own process group, so stop() reaches its children and a Ctrl-C in a
      // terminal running `devstack up` does not reach it.
      child = spawn(command, args, { detached: true, stdio: ["ignore", fd, fd], env: { ...process.env, ...base.env }, cwd: spec.dataDir });
    } finally {
      closeSync(fd);
    }
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", (err) => reject(new Error(`cannot start ${spec.kind} (${base.command}): ${err.message}`)));
    });
    child.unref();
    this.child = child;
    this.childExit = new Promise((resolve) => child.once("exit", () => resolve()));
    this.currentPid = child.pid!;
    this.reused = false;
    if (!spec.keepRunning) {
      owned.add(this);
      installExitHook();
    }
    try {
      await this.waitReady();
    } catch (err) {
      signalGroup(this.currentPid, "SIGKILL");
      await this.waitExit(5_000);
      this.forget();
      throw err;
    }
    this.writeState();
    this.log.info(`${spec.kind} started (pid ${this.currentPid}) on port ${this.port}`);
  }

  private writeState(): void {
    const state: StateFile = { kind: this.kind, pid: this.currentPid!, ports: this.ports, startedAt: new Date().toISOString() };
    writeFileSync(join(this.dataDir, STATE_FILE), JSON.stringify(state, null, 2) + "\n");
  }

  private exited(): boolean {
    if (this.currentPid === undefined) return true;
    if (this.child) return this.child.exitCode !== null || this.child.signalCode !== null;
    return !isAlive(this.currentPid);
  }

  private async waitReady(): Promise<void> {
    const timeout = this.spec.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
    const deadline = Date.now() + timeout;
    let lastError: unknown;
    for (;;) {
      if (this.exited()) {
        const code = this.child ? ` (exit code ${this.child.exitCode ?? this.child.signalCode})` : "";
        throw new Error(`${this.kind} exited before it was ready${code}; log ${this.logFile}:\n${logTail(this.logFile)}`);
      }
      try {
        await this.spec.probe(this.ports);
        return;
      } catch (err) {
        lastError = err;
      }
      if (Date.now() >= deadline) {
        throw new Error(
          `${this.kind} was not ready on port ${this.port} within ${timeout} ms ` +
            `(last check: ${(lastError as Error)?.message ?? lastError}); log ${this.logFile}:\n${logTail(this.logFile)}`,
        );
      }
      await sleep(PROBE_INTERVAL_MS);
    }
  }

  private async waitExit(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    if (this.childExit) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), timeoutMs)));
      try {
        return (await Promise.race([this.childExit.then(() => "exit" as const), timeout])) === "exit";
      } finally {
        clearTimeout(timer);
      }
    }
    while (Date.now() < deadline) {
      if (this.exited()) return true;
      await sleep(50);
    }
    return this.exited();
  }

  private forget(): void {
    owned.delete(this);
    this.currentPid = undefined;
    this.child = undefined;
    this.childExit = undefined;
  }

  async stop(): Promise<void> {
    const pid = this.currentPid;
    if (pid === undefined) return;
    if (!this.exited()) {
      signalGroup(pid, this.spec.stopSignal);
      if (!(await this.waitExit(this.spec.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS))) {
        this.log.warn(`${this.kind} (pid ${pid}) did not stop in time; killing it`);
        signalGroup(pid, "SIGKILL");
        await this.waitExit(5_000);
      }
    }
    this.forget();
    rmSync(join(this.dataDir, STATE_FILE), { force: true });
    this.log.info(`${this.kind} stopped (pid ${pid})`);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  /** Synchronous last-resort kill used from the process exit hook. */
  killNow(): void {
    if (this.currentPid !== undefined) signalGroup(this.currentPid, this.spec.exitSignal);
  }
}

/** Stops the server recorded in dataDir's state file (used by `devstack down`); false when none was running. */
export async function stopServerInDir(
  dataDir: string,
  kind: ServerKind,
  opts: { signal?: NodeJS.Signals; timeoutMs?: number } = {},
): Promise<boolean> {
  const running = findRunningServer(dataDir, kind);
  if (!running) {
    rmSync(join(dataDir, STATE_FILE), { force: true });
    return false;
  }
  const signal = opts.signal ?? (kind === "postgres" ? "SIGINT" : "SIGTERM");
  signalGroup(running.pid, signal);
  const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS);
  while (isAlive(running.pid) && Date.now() < deadline) await sleep(50);
  if (isAlive(running.pid)) {
    signalGroup(running.pid, "SIGKILL");
    const killDeadline = Date.now() + 5_000;
    while (isAlive(running.pid) && Date.now() < killDeadline) await sleep(50);
  }
  rmSync(join(dataDir, STATE_FILE), { force: true });
  return true;
}
