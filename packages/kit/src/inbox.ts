// Consumer-side deduplication: a consumer records the event id in the same transaction as its effect, so a
// redelivered (or re-published) event never applies its effect twice. Table: packages/kit/sql/outbox_inbox.sql.
import pg from "pg";
import { sqlTxFromPg, type SqlTx } from "./outbox.js";
import { EVENT_RETENTION_DEFAULTS } from "./retention.js";

/**
 * Records that `consumer` processed `eventId`; call it inside the transaction that applies the effect.
 * Returns true the first time (apply the effect, commit) and false when the event was already processed (skip the
 * effect; ack the message). Two concurrent deliveries of one event serialize on the primary key: the second waits
 * for the first transaction and then gets false (or true if the first rolled back).
 */
export async function recordInbox(tx: SqlTx, consumer: string, eventId: string): Promise<boolean> {
  checkInboxKey(consumer, eventId);
  return (await tx.$executeRawUnsafe(inboxInsertSql(1), consumer, eventId)) === 1;
}

/**
 * The statement `recordInbox` runs, with its two values (consumer, event id) as placeholders numbered from `first`:
 * for a service that records the event inside one of its own statements (`WITH fresh AS (...) SELECT ...`), saving
 * a round trip. It returns one row (`fresh`) only the first time; same semantics as `recordInbox`.
 */
export function inboxInsertSql(first: number): string {
  if (!Number.isInteger(first) || first < 1) throw new Error("inboxInsertSql: first must be an integer >= 1");
  return inboxInsert(`$${first}`, `$${first + 1}`);
}

/**
 * `inboxInsertSql` with the values written in as quoted literals, for SQL sent without parameters (e.g. together
 * with BEGIN in one simple-protocol round trip).
 */
export function inboxInsertLiteralSql(consumer: string, eventId: string): string {
  checkInboxKey(consumer, eventId);
  return inboxInsert(pg.escapeLiteral(consumer), pg.escapeLiteral(eventId));
}

const inboxInsert = (consumer: string, eventId: string): string =>
  `INSERT INTO inbox_events (consumer, event_id) VALUES (${consumer}, ${eventId}) ON CONFLICT DO NOTHING RETURNING true AS fresh`;

function checkInboxKey(consumer: string, eventId: string): void {
  if (typeof consumer !== "string" || consumer.length === 0) throw new Error("recordInbox: consumer must be a non-empty string");
  if (typeof eventId !== "string" || eventId.length === 0) throw new Error("recordInbox: eventId must be a non-empty string");
}

/**
 * Deletes inbox rows processed before `olderThan`; returns how many. Keep rows longer than any redelivery can
 * happen: longer than the stream's max age (LUNA_EVENTS: 7 days) plus the outbox's retention of unpublished rows.
 */
export async function pruneInbox(tx: SqlTx, olderThan: Date, batchSize = 10_000): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await tx.$executeRawUnsafe(
      `DELETE FROM inbox_events WHERE (consumer, event_id) IN (
         SELECT consumer, event_id FROM inbox_events WHERE processed_at < $1 LIMIT $2)`,
      olderThan, batchSize,
    );
    total += n;
    if (n < batchSize) return total;
  }
}

export interface InboxPrunerOptions {
  pool: pg.Pool;
  log: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
  /** Rows processed longer ago than this are deleted (default: LUNA_INBOX_RETAIN's, 14 days). */
  retainMs?: number;
  /** How often (default: LUNA_EVENT_PRUNE_INTERVAL's, 1 h; the first run comes one interval after the start). */
  intervalMs?: number;
}

export interface InboxPruner {
  /** Runs one prune now; resolves with the rows deleted. */
  pruneNow(): Promise<number>;
  /** Stops the timer and waits for a running prune. */
  stop(): Promise<void>;
}

/**
 * Deletes old inbox rows every `intervalMs`, so a consumer's table does not grow forever (one row per event
 * processed). Failures are logged and retried at the next interval.
 */
export function startInboxPruner(opts: InboxPrunerOptions): InboxPruner {
  const retainMs = opts.retainMs ?? EVENT_RETENTION_DEFAULTS.LUNA_INBOX_RETAIN;
  const intervalMs = opts.intervalMs ?? EVENT_RETENTION_DEFAULTS.LUNA_EVENT_PRUNE_INTERVAL;
  if (!(retainMs >= 0)) throw new Error("startInboxPruner: retainMs must be >= 0");
  if (!(intervalMs > 0)) throw new Error("startInboxPruner: intervalMs must be > 0");
  let running: Promise<number> | undefined;
  const pruneNow = (): Promise<number> => {
    running ??= pruneInbox(sqlTxFromPg(opts.pool), new Date(Date.now() - retainMs))
      .then((n) => {
        if (n > 0) opts.log.info({ deleted: n }, "inbox: pruned rows of old events");
        return n;
      })
      .finally(() => (running = undefined));
    return running;
  };
  const timer = setInterval(() => {
    pruneNow().catch((err: unknown) => opts.log.warn({ err }, "inbox: pruning failed; retried at the next interval"));
  }, intervalMs);
  timer.unref();
  return {
    pruneNow,
    async stop() {
      clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}
