/** Where localstack writes progress lines. A pino logger or `console` fits. */
export interface LocalLog {
  info(msg: string): void;
  warn(msg: string): void;
}

/** A log that drops everything (the default for servers started by tests). */
export const silentLog: LocalLog = { info() {}, warn() {} };

export type ServerKind = "postgres" | "redis" | "nats";

/** Handle to a local Postgres, Redis or NATS server process. */
export interface ManagedServer {
  readonly kind: ServerKind;
  /** Client port on 127.0.0.1; stays the same across restart(). */
  readonly port: number;
  readonly dataDir: string;
  /** The server's stdout/stderr. */
  readonly logFile: string;
  /** Pid of the running server; undefined while stopped. */
  readonly pid: number | undefined;
  /** True when start found the server already running from this data dir and adopted it. */
  readonly reused: boolean;
  /** Stops the server (graceful signal, then SIGKILL after the stop timeout). Data is kept. Idempotent. */
  stop(): Promise<void>;
  /** Stops (if running) and starts again on the same port with the same data; used to simulate an outage. */
  restart(): Promise<void>;
}

/** Options every server takes. */
export interface ServerOptions {
  /** Directory holding the server's data, log and state file; created when missing. */
  dataDir: string;
  /** Client port on 127.0.0.1; default: a free port picked by binding port 0. */
  port?: number;
  log?: LocalLog;
  /**
   * Keep the server running after this process exits (the dev stack). Default false: the server is tied to this
   * process (killed on exit and, on Linux, by the kernel when this process dies) so tests never leak servers.
   */
  keepRunning?: boolean;
  /**
   * Favour durability over speed. Default false (tests: Postgres fsync off, Redis without persistence).
   * The dev stack sets it to true.
   */
  durable?: boolean;
  /** How long to wait for the server to accept clients. Default 30 000 ms. */
  readyTimeoutMs?: number;
  /** How long stop() waits after the graceful signal before SIGKILL. Default 10 000 ms. */
  stopTimeoutMs?: number;
}

export const DEFAULT_READY_TIMEOUT_MS = 30_000;
export const DEFAULT_STOP_TIMEOUT_MS = 10_000;
