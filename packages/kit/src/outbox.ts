// Transactional outbox: a service writes its state change and the outgoing event in one Postgres transaction
// (`enqueueEvent`); the relay (`startOutboxRelay`) publishes committed rows to JetStream in order, with
// `Nats-Msg-Id` = event id so a re-publish after a crash is dropped by the stream's duplicate window.
// Tables: packages/kit/sql/outbox_inbox.sql.
import type pg from "pg";
import type { JetStreamClient } from "@nats-io/jetstream";
import { Gauge, type Registry } from "prom-client";
import { assertHeaders, assertPublishSubject, publishEvent } from "./nats.js";
import type { MinimalLogger } from "./nats.js";
import { isUuid } from "./ids.js";
import { createPgPool } from "./pg.js";
import { injectTraceHeaders } from "./tracing.js";
import { EVENT_RETENTION_DEFAULTS, outboxPruneOf } from "./retention.js";

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
  if (!isUuid(ev.id)) throw new Error(`enqueueEvent: id must be a UUID, got ${JSON.stringify(ev.id)}`);
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
  /** Rows published per transaction (default 100); a batch's publishes are sent together and their acks awaited together. */
  batchSize?: number;
  /** Fallback poll when no kick or NOTIFY arrives (default 200 ms). */
  pollIntervalMs?: number;
  /**
   * A pass woken by NOTIFY or the poll starts this long after the wake-up (default 0), so the commits of a burst
   * share one batch instead of a probe and a batch each; `kick()` is never delayed and ends such a wait at once.
   * For a service whose latency-sensitive events do not wait for the relay (it kicks for those, or publishes them
   * itself) and which would rather spend fewer statements. Order and delivery are the same either way.
   */
  notifyDelayMs?: number;
  /** Retry delay after a failure starts at 100 ms and doubles up to this (default 10 s). */
  maxBackoffMs?: number;
  /** Time to wait for JetStream's acks of a batch's publishes (default 5 s). */
  publishTimeoutMs?: number;
  /**
   * Published rows are deleted after `retainMs`, checked every `intervalMs` (default: LUNA_OUTBOX_RETAIN's and
   * LUNA_EVENT_PRUNE_INTERVAL's defaults, 7 days and 1 h); false = never.
   */
  prune?: { retainMs: number; intervalMs: number } | false;
  /** Called after each batch with the rows published (and how many JetStream reported as duplicates). */
  onPublished?: (info: { count: number; duplicates: number }) => void;
  /**
   * Exports the backlog (see {@link OUTBOX_BACKLOG_METRICS}) in the service's registry (the kit's `Metrics`), with
   * `outbox` = the module's name (the all-in-one process hosts several relays on one registry). Refreshed by the
   * relay loop at most every `intervalMs` (default 5 s): one statement on the partial unpublished index.
   */
  metrics?: { registry: Registry; outbox: string; intervalMs?: number };
}

/** `luna_outbox_unpublished` counts up to this many rows (a larger backlog reads as this): the count stays cheap. */
export const OUTBOX_UNPUBLISHED_COUNT_CAP = 10_000;

/** The relay's backlog gauges (labels: `outbox`, plus the registry's `luna_service`); the alert LunaOutboxLag reads `oldest`. */
const BACKLOG_GAUGES = {
  oldest: {
    name: "luna_outbox_oldest_unpublished_seconds",
    help: "Age in seconds of the oldest outbox row not yet published to NATS (0 when none waits).",
  },
  unpublished: {
    name: "luna_outbox_unpublished",
    help: `Outbox rows waiting to be published to NATS (counted up to ${OUTBOX_UNPUBLISHED_COUNT_CAP}).`,
  },
} as const;

/** The backlog gauges' names. */
export const OUTBOX_BACKLOG_METRICS = { oldest: BACKLOG_GAUGES.oldest.name, unpublished: BACKLOG_GAUGES.unpublished.name } as const;

/**
 * The backlog in one statement outside any transaction: the head of the queue (the row the relay publishes next, by
 * `seq` on the partial index, so one index entry and one heap row) and a count of the index's entries up to the cap.
 * The age is measured by Postgres's clock, the same clock that wrote `created_at`.
 */
const BACKLOG_SQL = `SELECT
  (SELECT EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8 FROM outbox_events
    WHERE published_at IS NULL ORDER BY seq LIMIT 1) AS oldest,
  (SELECT count(*)::int FROM (SELECT 1 FROM outbox_events WHERE published_at IS NULL
    LIMIT ${OUTBOX_UNPUBLISHED_COUNT_CAP}) AS head) AS n`;

/** The registry's backlog gauge of that name, created once per registry (several relays may share one). */
function backlogGauge(registry: Registry, { name, help }: { name: string; help: string }): Gauge<"outbox"> {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Gauge<"outbox">;
  return new Gauge({ name, help, labelNames: ["outbox"] as const, registers: [registry] });
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
const LOCK_KEYS = "hashtext('luna'), hashtext('outbox_relay')";

/**
 * Opens a batch in one round trip (a simple-protocol query string of two statements; nothing in it comes from
 * outside: the limit is a validated integer): the transaction, the relay lock and the rows. The uncorrelated
 * sub-select runs once (an init plan) and takes the transaction-scoped lock; when another relay holds it, no row is
 * selected, so none is row-locked either (a row lock would make the lock holder's SKIP LOCKED skip it and publish
 * later rows first).
 */
const openBatchSql = (limit: number): string =>
  `BEGIN; SELECT id, subject, payload, headers FROM outbox_events
    WHERE published_at IS NULL AND (SELECT pg_try_advisory_xact_lock(${LOCK_KEYS}))
    ORDER BY seq LIMIT ${limit} FOR UPDATE SKIP LOCKED`;

/** Marks rows published and commits, in one round trip; the ids are UUIDs read from the table (checked again). */
const markAndCommitSql = (ids: string[]): string => {
  for (const id of ids) if (!isUuid(id)) throw new Error(`outbox relay: unexpected event id ${JSON.stringify(id)}`);
  return `UPDATE outbox_events SET published_at = now() WHERE id IN (${ids.map((id) => `'${id}'`).join(", ")}); COMMIT`;
};

/** Whether any row waits (an index-only probe of the partial index, outside any transaction). */
const PENDING_PROBE_SQL = "SELECT EXISTS (SELECT 1 FROM outbox_events WHERE published_at IS NULL) AS pending";

/**
 * Starts the outbox relay loop. Each batch runs in one transaction: take the relay lock, select unpublished rows in
 * `seq` order (`FOR UPDATE SKIP LOCKED`), publish them (all sent at once, in order, on the one NATS connection,
 * which the server stores in that order; the acks are awaited together), mark the acknowledged ones in one
 * statement, commit. Two database round trips per batch. Guarantees:
 * - never drops: a row is marked only after JetStream stored it; on any failure the rows not acknowledged stay
 *   unpublished and are retried with capped backoff, forever (logged at warn with the event id on the first
 *   failure and every 20th after, so a row that can never be published is visible);
 * - order: rows reach the stream in `seq` order, and after a failure the relay retries one row at a time (a
 *   failed row holds up every later one) until a publish succeeds again. The one exception: a failure of one
 *   message the server reports while it stores the later messages of the same batch (e.g. a subject no stream
 *   captures); those later rows (already stored) are marked and stay ahead of the failed one. A connection or
 *   server failure fails the rest of the batch as well, so it reorders nothing.
 * - one relay at a time: the transaction-scoped advisory lock lets one replica publish at a time (SKIP LOCKED alone
 *   would let a second replica publish later rows before earlier ones); several replicas are safe and take over
 *   from each other;
 * - a crash between publish and mark rolls the marks back; the re-publish carries the same `Nats-Msg-Id` and the
 *   stream drops it within its duplicate window (2 min); later than that the consumer's inbox drops it.
 * Order is `seq` order, i.e. insert order; writers that must be ordered per aggregate should change the aggregate's
 * row before enqueueing, so the row lock orders their transactions.
 *
 * Wake-ups: `kick()` (in-process writers, after their commit) opens a batch at once; NOTIFY (any process) and the
 * poll first probe with one cheap statement whether anything waits. A commit of this process usually arrives both
 * as a kick and as a NOTIFY, so the NOTIFY echo costs that probe rather than a batch transaction. With
 * `notifyDelayMs`, NOTIFY- and poll-driven passes start that long after the wake-up, so a burst of commits costs one
 * probe and one batch.
 */
export function startOutboxRelay(opts: OutboxRelayOptions): OutboxRelay {
  const batchSize = opts.batchSize ?? 100;
  const pollIntervalMs = opts.pollIntervalMs ?? 200;
  const notifyDelayMs = opts.notifyDelayMs ?? 0;
  const maxBackoffMs = opts.maxBackoffMs ?? 10_000;
  const publishTimeoutMs = opts.publishTimeoutMs ?? 5_000;
  const prune = opts.prune === undefined ? outboxPruneOf(EVENT_RETENTION_DEFAULTS) : opts.prune;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error("startOutboxRelay: batchSize must be an integer >= 1");
  if (!(pollIntervalMs > 0)) throw new Error("startOutboxRelay: pollIntervalMs must be > 0");
  if (!(notifyDelayMs >= 0)) throw new Error("startOutboxRelay: notifyDelayMs must be >= 0");
  if (!(maxBackoffMs >= 100)) throw new Error("startOutboxRelay: maxBackoffMs must be >= 100");
  if (prune && !(prune.retainMs >= 0 && prune.intervalMs > 0)) {
    throw new Error("startOutboxRelay: prune.retainMs must be >= 0 and prune.intervalMs > 0");
  }
  if (!opts.pool && !opts.databaseUrl) throw new Error("startOutboxRelay: give pool or databaseUrl");
  const metricsIntervalMs = opts.metrics?.intervalMs ?? 5_000;
  if (opts.metrics && !(metricsIntervalMs > 0)) throw new Error("startOutboxRelay: metrics.intervalMs must be > 0");
  if (opts.metrics && !opts.metrics.outbox) throw new Error("startOutboxRelay: metrics.outbox must name the outbox");
  // The relay holds one connection for LISTEN and uses another for each batch.
  if (opts.pool && (opts.pool.options.max ?? 10) < 2) throw new Error("startOutboxRelay: the pool needs max >= 2 connections");
  const { js, log } = opts;
  const ownPool = !opts.pool;
  const pool = opts.pool ?? createPgPool({ url: opts.databaseUrl!, max: 2, name: "luna-outbox-relay", log, connectTimeoutMs: 5_000 });

  let stopped = false;
  const stopWaiters = new Set<() => void>();
  // Wake-ups, cleared when a pass starts, so one that arrives during a pass is not lost: `kicked` by a writer of
  // this process after its commit (rows are waiting), `notified` by NOTIFY or the listener's catch-up (often the
  // echo of a commit that also kicked, so it is probed first).
  let kicked = false;
  let notified = false;
  let wake: (() => void) | undefined;
  const wakeUp = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  /** Waiting out `notifyDelayMs`: ended by a kick (or stop), not by NOTIFYs, which it is there to gather. */
  let gathering: (() => void) | undefined;
  const kick = (): void => {
    kicked = true;
    gathering?.();
    wakeUp();
  };
  const notify = (): void => {
    notified = true;
    wakeUp();
  };
  // Waits for a kick, a NOTIFY, stop() or the timeout, whichever comes first. A plain timer and a resolver: a
  // wake-up costs no AbortController and no rejected promise.
  const idle = (ms: number): Promise<void> => new Promise<void>((resolve) => {
    if (kicked || notified || stopped) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      if (wake === done) wake = undefined;
      resolve();
    };
    const timer = setTimeout(done, ms);
    wake = done;
  });
  /**
   * Waits `ms`, ended early by stop() only (`kickable` false: the backoff after a failure, which a burst of commits
   * must not cut short against a dead NATS) or also by a kick (`kickable` true: the `notifyDelayMs` wait, there to
   * gather NOTIFYs, not kicks).
   */
  const pause = (ms: number, kickable: boolean): Promise<void> => new Promise<void>((resolve) => {
    if (stopped || (kickable && kicked)) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      stopWaiters.delete(done);
      if (gathering === done) gathering = undefined;
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (kickable) gathering = done;
    stopWaiters.add(done);
  });

  type BatchResult = { published: number; duplicates: number; selected: number; error?: unknown; failedId?: string };

  type Row = { id: string; subject: string; payload: Buffer; headers: Record<string, string> | null };
  type Sent = { ok: true; duplicate: boolean } | { ok: false; err: unknown };

  const relayBatch = async (limit: number): Promise<BatchResult> => {
    const client = await pool.connect();
    let broken: Error | undefined;
    // A connection lost between queries (e.g. while publishing) is reported as an 'error' event; without a listener
    // it would crash the process. The next query fails and the batch rolls back.
    const onError = (err: Error): void => { broken = err; };
    client.on("error", onError);
    try {
      const opened = (await client.query(openBatchSql(limit))) as unknown as pg.QueryResult[];
      const rows = (opened[1]?.rows ?? []) as Row[];
      if (rows.length === 0) {
        await client.query("COMMIT");
        return { published: 0, duplicates: 0, selected: 0 };
      }
      // All sent now, in seq order; the client writes them to the socket together and the server stores them in
      // the order it reads them.
      const sent = await Promise.all(rows.map((row): Promise<Sent> => publishEvent(js, row.subject, row.payload, {
        msgId: row.id, headers: row.headers ?? {}, timeoutMs: publishTimeoutMs,
      }).then((ack) => ({ ok: true, duplicate: ack.duplicate }), (err: unknown) => ({ ok: false, err }))));
      const done: string[] = [];
      let duplicates = 0;
      let error: unknown;
      let failedId: string | undefined;
      sent.forEach((r, i) => {
        if (r.ok) {
          done.push(rows[i]!.id);
          if (r.duplicate) duplicates++;
        } else if (error === undefined) {
          error = r.err;
          failedId = rows[i]!.id;
        }
      });
      if (broken) throw broken; // the session is gone: its marks cannot commit; the rows are published again
      await client.query(done.length > 0 ? markAndCommitSql(done) : "COMMIT");
      return { published: done.length, duplicates, selected: rows.length, error, failedId };
    } catch (err) {
      broken = err instanceof Error ? err : new Error(String(err));
      await client.query("ROLLBACK").catch(() => undefined);
      throw err;
    } finally {
      client.off("error", onError);
      client.release(broken); // a failed connection is destroyed, not returned to the pool
    }
  };

  /** Whether unpublished rows exist (see the wake-up note above). */
  const anyPending = async (): Promise<boolean> => {
    const { rows } = await pool.query<{ pending: boolean }>(PENDING_PROBE_SQL);
    return rows[0]?.pending === true;
  };

  const backlog = opts.metrics && {
    labels: { outbox: opts.metrics.outbox },
    oldest: backlogGauge(opts.metrics.registry, BACKLOG_GAUGES.oldest),
    unpublished: backlogGauge(opts.metrics.registry, BACKLOG_GAUGES.unpublished),
  };
  let lastBacklog = 0;
  /** Refreshes the backlog gauges when due; a failure keeps the last values (the relay's own failure is logged). */
  const maybeRefreshBacklog = async (): Promise<void> => {
    if (!backlog || Date.now() - lastBacklog < metricsIntervalMs) return;
    lastBacklog = Date.now();
    try {
      const { rows } = await pool.query<{ oldest: number | null; n: number }>(BACKLOG_SQL);
      backlog.oldest.set(backlog.labels, Math.max(0, rows[0]?.oldest ?? 0));
      backlog.unpublished.set(backlog.labels, rows[0]?.n ?? 0);
    } catch (err) {
      log.debug({ err }, "outbox relay: backlog metrics not refreshed");
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
    // A full batch at start, after a failure and after a full batch; otherwise a pass not caused by a writer's kick
    // (NOTIFY, poll) first probes whether anything waits: one cheap statement instead of a batch transaction.
    let batchNext = true;
    while (!stopped) {
      // Every pass, also the retries of an outage (the backoff is at most maxBackoffMs), so the gauge keeps rising.
      await maybeRefreshBacklog();
      // A pass not asked for by a kick (nor owed: start, failure, full batch) first lets a burst's commits gather.
      if (notifyDelayMs > 0 && !batchNext && !kicked) {
        await pause(notifyDelayMs, true);
        if (stopped) break;
      }
      const probe = !batchNext && !kicked;
      kicked = false;
      notified = false;
      batchNext = false;
      let result: BatchResult;
      try {
        if (probe && !(await anyPending())) {
          await idle(pollIntervalMs);
          continue;
        }
        // After a failure, one row at a time until a publish succeeds again (see the ordering note).
        result = await relayBatch(failures > 0 ? 1 : batchSize);
      } catch (err) {
        result = { published: 0, duplicates: 0, selected: 0, error: err };
      }
      if (result.published > 0) opts.onPublished?.({ count: result.published, duplicates: result.duplicates });
      if (result.error !== undefined) {
        failures++;
        const wait = Math.min(100 * 2 ** (failures - 1), maxBackoffMs);
        // Warn on the first failure and then now and then; an outage should be visible without flooding the log.
        const level = failures % 20 === 1 ? "warn" : "debug";
        log[level]({ err: result.error, eventId: result.failedId, failures, retryInMs: wait },
          "outbox relay: publish or database step failed; retrying");
        await pause(wait, false);
        batchNext = true;
        continue;
      }
      if (failures > 0) {
        log.info({ failures }, "outbox relay: recovered");
        failures = 0;
        batchNext = true; // back to full batches at once
        continue;
      }
      if (result.selected === batchSize) {
        batchNext = true; // probably more waiting
        continue;
      }
      await maybePrune();
      await idle(pollIntervalMs);
    }
  };

  // LISTEN on a dedicated connection so commits in other processes wake this relay within milliseconds.
  const listen = async (): Promise<void> => {
    let failures = 0;
    while (!stopped) {
      let client: pg.PoolClient | undefined;
      let failed: Error | undefined;
      try {
        client = await pool.connect();
        const c = client;
        const ended = new Promise<void>((resolve) => {
          c.on("error", (err) => { failed = err; resolve(); });
          c.on("end", () => resolve());
        });
        c.on("notification", notify);
        await c.query(`LISTEN ${OUTBOX_CHANNEL}`);
        failures = 0;
        notify(); // rows committed while we were not listening
        let onStop: (() => void) | undefined;
        await Promise.race([ended, new Promise<void>((resolve) => {
          onStop = resolve;
          if (stopped) resolve();
          else stopWaiters.add(resolve);
        })]);
        if (onStop) stopWaiters.delete(onStop);
        if (failed) throw failed;
      } catch (err) {
        failed = err instanceof Error ? err : new Error(String(err));
        if (stopped) break;
        failures++;
        if (failures % 20 === 1) log.warn({ err }, "outbox relay: LISTEN connection failed; polling until it is back");
        await pause(Math.min(500 * 2 ** (failures - 1), maxBackoffMs), false);
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
        stopped = true;
        wake?.();
        for (const w of [...stopWaiters]) w();
        await running;
        // A stopped relay reports nothing rather than a frozen backlog.
        backlog?.oldest.remove(backlog.labels);
        backlog?.unpublished.remove(backlog.labels);
        if (ownPool) await pool.end();
      })();
      return stopping;
    },
  };
}
