// Transactional outbox: a service writes its state change and the outgoing event in one Postgres transaction
// (`enqueueEvent`); the relay (`startOutboxRelay`) publishes committed rows to JetStream in order, with
// `Nats-Msg-Id` = event id so a re-publish after a crash is dropped by the stream's duplicate window.
// Tables: packages/kit/sql/outbox_inbox.sql.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import type { JetStreamClient } from "@nats-io/jetstream";
import { assertHeaders, assertPublishSubject, publishEvent } from "./nats.js";
import type { MinimalLogger } from "./nats.js";
import { injectTraceHeaders } from "./tracing.js";

/**
 * The raw-SQL surface of a Prisma client or of a Prisma interactive-transaction client (`$transaction(async (tx) =>
 * ...)`); `sqlTxFromPg` adapts a node-postgres pool or client to it.
 */
export type SqlTx = {
  $executeRawUnsafe(sql: string, ...values: unknown[]): Promise<number>;
  $queryRawUnsafe<T = unknown>(sql: string, ...values: unknown[]): Promise<T>;
};

/** Adapts a node-postgres pool or client to `SqlTx` (for code and tests that do not use Prisma). */
export function sqlTxFromPg(db: pg.Pool | pg.PoolClient | pg.Client): SqlTx {
  return {
    async $executeRawUnsafe(sql: string, ...values: unknown[]): Promise<number> {
      return (await db.query(sql, values)).rowCount ?? 0;
    },
    async $queryRawUnsafe<T = unknown>(sql: string, ...values: unknown[]): Promise<T> {
      return (await db.query(sql, values)).rows as T;
    },
  };
}

/** Postgres channel the outbox trigger notifies on every insert (see outbox_inbox.sql). */
export const OUTBOX_CHANNEL = "luna_outbox";

export interface OutboxEvent {
  /** Event id (UUID): the outbox primary key and the JetStream `Nats-Msg-Id`. */
  id: string;
  /** Concrete subject, e.g. `luna.events.user.created`. */
  subject: string;
  /** Encoded event (a `luna.events.v1` protobuf message). */
  payload: Uint8Array;
  headers?: Record<string, string>;
}

/** NATS' default max_payload is 1 MiB; headers travel in the same frame, so leave them room. */
export const MAX_OUTBOX_PAYLOAD_BYTES = 1024 * 1024 - 64 * 1024;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** An outbox row's column values, validated and with the trace headers captured (see {@link outboxRow}). */
export interface OutboxRow {
  id: string;
  subject: string;
  payload: Buffer;
  /** The headers as a JSON object text. */
  headers: string;
}

/** The INSERT head of an outbox row, for a service statement that stores its state and its event at once. */
export const OUTBOX_INSERT = "INSERT INTO outbox_events (id, subject, payload, headers)";

/** The typed placeholders of an outbox row's four values, numbered from `first`: `$n::uuid, $n+1, $n+2::bytea, $n+3::jsonb`. */
export function outboxValuesSql(first: number): string {
  return `$${first}::uuid, $${first + 1}, $${first + 2}::bytea, $${first + 3}::jsonb`;
}

/**
 * Validates an event and turns it into the row the relay publishes, capturing the active W3C `traceparent` into the
 * headers so the consumer continues the caller's trace. Everything is validated here, because a row the relay
 * could never publish would hold up every later event.
 */
export function outboxRow(ev: OutboxEvent): OutboxRow {
  if (typeof ev.id !== "string" || !UUID_RE.test(ev.id)) throw new Error(`enqueueEvent: id must be a UUID, got ${JSON.stringify(ev.id)}`);
  assertPublishSubject(ev.subject);
  if (!(ev.payload instanceof Uint8Array)) throw new Error("enqueueEvent: payload must be a Uint8Array");
  if (ev.payload.byteLength > MAX_OUTBOX_PAYLOAD_BYTES) {
    throw new Error(`enqueueEvent: payload is ${ev.payload.byteLength} bytes; the limit is ${MAX_OUTBOX_PAYLOAD_BYTES}`);
  }
  const headers: Record<string, string> = { ...(ev.headers ?? {}) };
  assertHeaders(headers);
  if (!headers.traceparent) injectTraceHeaders({ set: (k, v) => { headers[k] = v; } });
  const payload = Buffer.from(ev.payload.buffer, ev.payload.byteOffset, ev.payload.byteLength);
  return { id: ev.id, subject: ev.subject, payload, headers: JSON.stringify(headers) };
}

/**
 * Writes an event into the outbox inside the caller's transaction; it is published only if that transaction
 * commits. Call `relay.kick()` after the commit for millisecond dispatch in this process; other processes wake by
 * NOTIFY. A service that writes its state in one statement can embed the row itself with {@link outboxRow},
 * {@link OUTBOX_INSERT} and {@link outboxValuesSql}.
 */
export async function enqueueEvent(tx: SqlTx, ev: OutboxEvent): Promise<void> {
  const row = outboxRow(ev);
  await tx.$executeRawUnsafe(`${OUTBOX_INSERT} VALUES (${outboxValuesSql(1)})`, row.id, row.subject, row.payload, row.headers);
}

/** Deletes published rows older than `olderThan`; returns how many. Unpublished rows are never touched. */
export async function pruneOutbox(tx: SqlTx, olderThan: Date, batchSize = 10_000): Promise<number> {
  let total = 0;
  for (;;) {
    // Bounded batches keep each delete short, so it never holds locks the relay or writers wait on for long.
    const n = await tx.$executeRawUnsafe(
      `DELETE FROM outbox_events WHERE id IN (
         SELECT id FROM outbox_events WHERE published_at IS NOT NULL AND published_at < $1 LIMIT $2)`,
      olderThan, batchSize,
    );
    total += n;
    if (n < batchSize) return total;
  }
}

export interface OutboxRelayOptions {
  /**
   * A node-postgres pool of the service's database (max >= 2: the relay keeps one connection for LISTEN; give the
   * pool an 'error' listener, as for any pg pool), or its URL (the relay then owns a small pool of its own).
   */
  pool?: pg.Pool;
  databaseUrl?: string;
  js: Pick<JetStreamClient, "publish">;
  log: MinimalLogger;
  /** Rows published per transaction (default 100). */
  batchSize?: number;
  /** Fallback poll when no kick or NOTIFY arrives (default 200 ms). */
  pollIntervalMs?: number;
  /** Retry delay after a failure starts at 100 ms and doubles up to this (default 10 s). */
  maxBackoffMs?: number;
  /** Time to wait for JetStream's ack of one publish (default 5 s). */
  publishTimeoutMs?: number;
  /** Published rows are deleted after `retainMs` (default 7 days), checked every `intervalMs` (default 1 h); false = never. */
  prune?: { retainMs: number; intervalMs: number } | false;
  /** Called after each batch with the rows published (and how many JetStream reported as duplicates). */
  onPublished?: (info: { count: number; duplicates: number }) => void;
}

export interface OutboxRelay {
  /** Publish now instead of at the next poll; call after committing a transaction that enqueued events. */
  kick(): void;
  /** Unpublished rows (for a pending-rows gauge). */
  pending(): Promise<number>;
  /** Finishes the current batch, then stops. Idempotent. */
  stop(): Promise<void>;
}

// Two-key advisory lock (a separate key space from single bigint keys, e.g. a migration lock).
const LOCK_SQL = "SELECT pg_try_advisory_xact_lock(hashtext('luna'), hashtext('outbox_relay')) AS locked";

/**
 * Starts the outbox relay loop. Each batch runs in one transaction: take the relay lock, select unpublished rows in
 * `seq` order (`FOR UPDATE SKIP LOCKED`), publish them one by one (each awaits its stream ack), mark the published
 * ones, commit. Guarantees:
 * - never drops: a row is marked only after JetStream stored it; on any failure the rest of the batch stays
 *   unpublished and is retried with capped backoff, forever (logged at warn with the event id on the first
 *   failure and every 20th after, so a row that can never be published is visible);
 * - never reorders: publishing stops at the first failure, and the transaction-scoped advisory lock lets one replica
 *   publish at a time (SKIP LOCKED alone would let a second replica publish later rows before earlier ones);
 *   several replicas are safe and take over from each other;
 * - a crash between publish and mark rolls the marks back; the re-publish carries the same `Nats-Msg-Id` and the
 *   stream drops it within its duplicate window (2 min); later than that the consumer's inbox drops it.
 * Order is `seq` order, i.e. insert order; writers that must be ordered per aggregate should change the aggregate's
 * row before enqueueing, so the row lock orders their transactions.
 */
export function startOutboxRelay(opts: OutboxRelayOptions): OutboxRelay {
  const batchSize = opts.batchSize ?? 100;
  const pollIntervalMs = opts.pollIntervalMs ?? 200;
  const maxBackoffMs = opts.maxBackoffMs ?? 10_000;
  const publishTimeoutMs = opts.publishTimeoutMs ?? 5_000;
  const prune = opts.prune === undefined ? { retainMs: 7 * 24 * 3600_000, intervalMs: 3600_000 } : opts.prune;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error("startOutboxRelay: batchSize must be an integer >= 1");
  if (!(pollIntervalMs > 0)) throw new Error("startOutboxRelay: pollIntervalMs must be > 0");
  if (!(maxBackoffMs >= 100)) throw new Error("startOutboxRelay: maxBackoffMs must be >= 100");
  if (prune && !(prune.retainMs >= 0 && prune.intervalMs > 0)) {
    throw new Error("startOutboxRelay: prune.retainMs must be >= 0 and prune.intervalMs > 0");
  }
  if (!opts.pool && !opts.databaseUrl) throw new Error("startOutboxRelay: give pool or databaseUrl");
  // The relay holds one connection for LISTEN and uses another for each batch.
  if (opts.pool && (opts.pool.options.max ?? 10) < 2) throw new Error("startOutboxRelay: the pool needs max >= 2 connections");
  const { js, log } = opts;
  const ownPool = !opts.pool;
  const pool = opts.pool ?? new pg.Pool({
    connectionString: opts.databaseUrl, max: 2, application_name: "luna-outbox-relay", connectionTimeoutMillis: 5_000,
  });
  if (ownPool) pool.on("error", (err) => log.warn({ err }, "outbox relay: idle database connection failed"));

  const stopper = new AbortController();
  let wake: (() => void) | undefined;
  let kicked = false;
  const kick = (): void => {
    kicked = true;
    wake?.();
  };
  // Waits for a kick, a NOTIFY, stop() or the timeout, whichever comes first.
  const idle = async (ms: number): Promise<void> => {
    if (kicked || stopper.signal.aborted) return;
    const ac = new AbortController();
    const woken = new Promise<void>((resolve) => { wake = resolve; });
    const onStop = (): void => ac.abort();
    stopper.signal.addEventListener("abort", onStop, { once: true });
    try {
      await Promise.race([woken, sleep(ms, undefined, { signal: ac.signal }).catch(() => undefined)]);
    } finally {
      wake = undefined;
      ac.abort();
      stopper.signal.removeEventListener("abort", onStop);
    }
  };

  type BatchResult = { published: number; duplicates: number; busy: boolean; error?: unknown; failedId?: string };

  const relayBatch = async (): Promise<BatchResult> => {
    const client = await pool.connect();
    let broken: Error | undefined;
    // A connection lost between queries (e.g. while publishing) is reported as an 'error' event; without a listener
    // it would crash the process. The next query fails and the batch rolls back.
    const onError = (err: Error): void => { broken = err; };
    client.on("error", onError);
    try {
      await client.query("BEGIN");
      const lock = await client.query<{ locked: boolean }>(LOCK_SQL);
      if (!lock.rows[0]?.locked) {
        await client.query("ROLLBACK");
        return { published: 0, duplicates: 0, busy: true };
      }
      const { rows } = await client.query<{ id: string; subject: string; payload: Buffer; headers: Record<string, string> | null }>(
        `SELECT id, subject, payload, headers FROM outbox_events
          WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED`,
        [batchSize],
      );
      const done: string[] = [];
      let duplicates = 0;
      let error: unknown;
      let failedId: string | undefined;
      for (const row of rows) {
        if (broken) break; // the session is gone: its marks cannot commit, so stop publishing this batch
        try {
          const ack = await publishEvent(js, row.subject, row.payload, {
            msgId: row.id, headers: row.headers ?? {}, timeoutMs: publishTimeoutMs,
          });
          done.push(row.id);
          if (ack.duplicate) duplicates++;
        } catch (err) {
          error = err;
          failedId = row.id;
          break; // later rows must wait: publishing them now would reorder
        }
      }
      if (done.length > 0) {
        await client.query("UPDATE outbox_events SET published_at = now() WHERE id = ANY($1::uuid[])", [done]);
      }
      await client.query("COMMIT");
      return { published: done.length, duplicates, busy: false, error, failedId };
    } catch (err) {
      broken = err instanceof Error ? err : new Error(String(err));
      await client.query("ROLLBACK").catch(() => undefined);
      throw err;
    } finally {
      client.off("error", onError);
      client.release(broken); // a failed connection is destroyed, not returned to the pool
    }
  };

  let lastPrune = 0;
  const maybePrune = async (): Promise<void> => {
    if (!prune || Date.now() - lastPrune < prune.intervalMs) return;
    lastPrune = Date.now();
    try {
      const n = await pruneOutbox(sqlTxFromPg(pool), new Date(Date.now() - prune.retainMs));
      if (n > 0) log.info({ deleted: n }, "outbox: pruned published rows");
    } catch (err) {
      log.warn({ err }, "outbox: prune failed; will try again later");
    }
  };

  const loop = async (): Promise<void> => {
    let failures = 0;
    while (!stopper.signal.aborted) {
      kicked = false;
      let result: BatchResult;
      try {
        result = await relayBatch();
      } catch (err) {
        result = { published: 0, duplicates: 0, busy: false, error: err };
      }
      if (result.published > 0) opts.onPublished?.({ count: result.published, duplicates: result.duplicates });
      if (result.error !== undefined) {
        failures++;
        const wait = Math.min(100 * 2 ** (failures - 1), maxBackoffMs);
        // Warn on the first failure and then now and then; an outage should be visible without flooding the log.
        const level = failures % 20 === 1 ? "warn" : "debug";
        log[level]({ err: result.error, eventId: result.failedId, failures, retryInMs: wait },
          "outbox relay: publish or database step failed; retrying");
        await idleUnkickable(wait);
        continue;
      }
      if (failures > 0) log.info({ failures }, "outbox relay: recovered");
      failures = 0;
      if (result.published === batchSize) continue; // probably more waiting
      await maybePrune();
      await idle(pollIntervalMs);
    }
  };
  // Backoff after a failure is not cut short by kicks (a burst of commits would otherwise hammer a dead NATS).
  const idleUnkickable = async (ms: number): Promise<void> => {
    await sleep(ms, undefined, { signal: stopper.signal }).catch(() => undefined);
  };

  // LISTEN on a dedicated connection so commits in other processes wake this relay within milliseconds.
  const listen = async (): Promise<void> => {
    let failures = 0;
    while (!stopper.signal.aborted) {
      let client: pg.PoolClient | undefined;
      let failed: Error | undefined;
      try {
        client = await pool.connect();
        const c = client;
        const ended = new Promise<void>((resolve) => {
          c.on("error", (err) => { failed = err; resolve(); });
          c.on("end", () => resolve());
        });
        c.on("notification", () => kick());
        await c.query(`LISTEN ${OUTBOX_CHANNEL}`);
        failures = 0;
        kick(); // rows committed while we were not listening
        await Promise.race([ended, new Promise<void>((resolve) => {
          if (stopper.signal.aborted) resolve();
          stopper.signal.addEventListener("abort", () => resolve(), { once: true });
        })]);
        if (failed) throw failed;
      } catch (err) {
        failed = err instanceof Error ? err : new Error(String(err));
        if (stopper.signal.aborted) break;
        failures++;
        if (failures % 20 === 1) log.warn({ err }, "outbox relay: LISTEN connection failed; polling until it is back");
        await idleUnkickable(Math.min(500 * 2 ** (failures - 1), maxBackoffMs));
      } finally {
        // Destroy rather than return: a pooled connection must not keep listening.
        client?.release(failed ?? true);
      }
    }
  };

  const running = Promise.all([
    loop().catch((err: unknown) => log.error({ err }, "outbox relay loop crashed")),
    listen().catch((err: unknown) => log.error({ err }, "outbox relay listener crashed")),
  ]);
  let stopping: Promise<void> | undefined;
  return {
    kick,
    async pending(): Promise<number> {
      const { rows } = await pool.query<{ n: string }>("SELECT count(*) AS n FROM outbox_events WHERE published_at IS NULL");
      return Number(rows[0]?.n ?? 0);
    },
    stop(): Promise<void> {
      stopping ??= (async () => {
        stopper.abort();
        wake?.();
        await running;
        if (ownPool) await pool.end();
      })();
      return stopping;
    },
  };
}
