// The one way services open a Postgres pool: one place for the options every pool needs and for the error
// listeners that keep a lost connection from crashing the process.
import pg from "pg";
import type { Logger } from "./log.js";

export interface PgPoolOptions {
  /** postgresql:// URL. */
  url: string;
  /** Connections at most (each service documents its own setting). */
  max: number;
  /** `application_name`, shown in pg_stat_activity: the service's name. */
  name: string;
  log: Pick<Logger, "warn">;
  /** Give up opening a connection after this long (default 10 s): a request fails instead of hanging. */
  connectTimeoutMs?: number;
  /** Close connections idle this long (default 30 s; 0 = never). */
  idleTimeoutMs?: number;
  /** Postgres ends a session left idle inside a transaction this long (a stuck caller); default: not set. */
  idleInTransactionTimeoutMs?: number;
}

/**
 * A `pg.Pool` whose connections can fail without taking the process down. node-postgres reports a connection the
 * server ends (restart, failover, `pg_terminate_backend`, an idle timeout in a proxy) as an `error` event: on the
 * pool while the connection is idle in it, on the client while it is checked out between queries — and an `error`
 * event nobody listens to is an uncaught exception. Both get a listener here; the query in flight still fails with
 * the error, and the pool opens a fresh connection for the next one.
 */
export function createPgPool(opts: PgPoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.max,
    application_name: opts.name,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
    idleTimeoutMillis: opts.idleTimeoutMs ?? 30_000,
    ...(opts.idleInTransactionTimeoutMs ? { options: `-c idle_in_transaction_session_timeout=${Math.round(opts.idleInTransactionTimeoutMs)}` } : {}),
  });
  pool.on("error", (err) => opts.log.warn({ err, pool: opts.name }, "an idle Postgres connection failed; it is replaced"));
  // An idle client's error reaches the pool's listener too: the client's own listener speaks only for checked-out ones.
  const checkedOut = new WeakSet<pg.PoolClient>();
  pool.on("acquire", (client) => checkedOut.add(client));
  pool.on("release", (_err, client) => checkedOut.delete(client));
  pool.on("connect", (client) => {
    client.on("error", (err) => {
      if (checkedOut.has(client)) opts.log.warn({ err, pool: opts.name }, "a Postgres connection in use failed");
    });
  });
  return pool;
}
