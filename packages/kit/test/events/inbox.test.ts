// Inbox deduplication with a real consumer: the effect (a counter) and the inbox row commit together, so repeats of
// one event (re-published, nak'ed, redelivered after a consumer died) apply the effect once.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type pg from "pg";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { createTestDatabase, testServers } from "../../src/testing/index.js";
import { connectNats, ensureStreams, publishEvent, runConsumer } from "../../src/nats.js";
import type { ConsumedMessage, ConsumerHandle, HandlerResult } from "../../src/nats.js";
import { inboxInsertLiteralSql, inboxInsertSql, recordInbox, pruneInbox, startInboxPruner } from "../../src/inbox.js";
import { sqlTxFromPg } from "../../src/outbox.js";
import { OUTBOX_INBOX_SQL, captureLog, testPool, decode, encode, gate, inTransaction, uniq, waitFor } from "./helpers.js";

const id = uniq();
const STREAM = `T_INBOX_${id}`;
const SUBJ = `tin${id}`;
const CONSUMER = "counter-test";

let db: { url: string; drop(): Promise<void> };
let pool: pg.Pool;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
const consumers: ConsumerHandle[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  pool = testPool(db.url, { max: 10 });
  await pool.query(OUTBOX_INBOX_SQL);
  await pool.query("CREATE TABLE counters (name text PRIMARY KEY, n int NOT NULL)");
  nc = await connectNats({ servers: testServers().natsUrl, name: "kit-inbox-test", log: captureLog() });
  js = jetstream(nc);
  jsm = await jetstreamManager(nc);
  await ensureStreams(nc, [{ name: STREAM, subjects: [`${SUBJ}.>`], retention: "limits", maxAgeMs: 0 }]);
});

beforeEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.stop()));
  await pool.query("TRUNCATE inbox_events, counters");
});

afterAll(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.stop()));
  await jsm?.streams.delete(STREAM).catch(() => undefined);
  await nc?.drain();
  await pool?.end();
  await db?.drop();
});

/** The effect under test: +1 on the counter named in the event, applied only for an event id seen the first time. */
async function applyOnce(msg: ConsumedMessage): Promise<boolean> {
  const { eventId, counter } = JSON.parse(decode(msg.data)) as { eventId: string; counter: string };
  return inTransaction(pool, async (client) => {
    const tx = sqlTxFromPg(client);
    if (!(await recordInbox(tx, CONSUMER, eventId))) return false;
    await client.query(
      "INSERT INTO counters (name, n) VALUES ($1, 1) ON CONFLICT (name) DO UPDATE SET n = counters.n + 1", [counter]);
    return true;
  });
}

async function counter(name: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>("SELECT n FROM counters WHERE name = $1", [name]);
  return rows[0]?.n ?? 0;
}

function consume(durable: string, filter: string, handle: (m: ConsumedMessage) => Promise<HandlerResult>,
  extra: Partial<Parameters<typeof runConsumer>[0]> = {}): ConsumerHandle {
  const c = runConsumer({ js, stream: STREAM, durable, filterSubject: filter, backoffMs: [100], log: captureLog(), handle, ...extra });
  consumers.push(c);
  return c;
}

describe("recordInbox", () => {
  it("is true the first time per (consumer, event id) and false after", async () => {
    const tx = sqlTxFromPg(pool);
    expect(await recordInbox(tx, "a", "e1")).toBe(true);
    expect(await recordInbox(tx, "a", "e1")).toBe(false);
    expect(await recordInbox(tx, "b", "e1")).toBe(true); // another consumer tracks its own progress
  });

  it("forgets the id when the effect's transaction rolls back", async () => {
    await expect(inTransaction(pool, async (client) => {
      expect(await recordInbox(sqlTxFromPg(client), "a", "e2")).toBe(true);
      throw new Error("effect failed");
    })).rejects.toThrow("effect failed");
    expect(await recordInbox(sqlTxFromPg(pool), "a", "e2")).toBe(true);
  });

  it("rejects empty names", async () => {
    await expect(recordInbox(sqlTxFromPg(pool), "", "e")).rejects.toThrow(/consumer/);
    await expect(recordInbox(sqlTxFromPg(pool), "a", "")).rejects.toThrow(/eventId/);
  });

  it("inboxInsertSql and inboxInsertLiteralSql record inside the caller's own statement, fresh only the first time", async () => {
    const once = (sql: string, values: unknown[] = []) =>
      pool.query<{ fresh: boolean }>(`WITH fresh AS (${sql}) SELECT EXISTS (SELECT 1 FROM fresh) AS fresh`, values);
    expect((await once(inboxInsertSql(1), ["a", "e3"])).rows[0]!.fresh).toBe(true);
    // Numbered from `first`: here after a value of the caller's own.
    const again = await pool.query<{ one: number; fresh: boolean }>(
      `WITH fresh AS (${inboxInsertSql(2)}) SELECT $1::int AS one, EXISTS (SELECT 1 FROM fresh) AS fresh`, [1, "a", "e3"]);
    expect(again.rows[0]).toEqual({ one: 1, fresh: false });
    expect(await recordInbox(sqlTxFromPg(pool), "a", "e3")).toBe(false); // the same record recordInbox makes
    // Literals are quoted, whatever the id holds.
    const tricky = "e4'); DROP TABLE inbox_events; --\\";
    expect((await once(inboxInsertLiteralSql("a", tricky))).rows[0]!.fresh).toBe(true);
    expect((await once(inboxInsertLiteralSql("a", tricky))).rows[0]!.fresh).toBe(false);
    expect(await recordInbox(sqlTxFromPg(pool), "a", tricky)).toBe(false);
    expect(() => inboxInsertLiteralSql("", "e")).toThrow(/consumer/);
    expect(() => inboxInsertSql(0)).toThrow(/first/);
  });

  it("prunes rows processed before the cutoff", async () => {
    const tx = sqlTxFromPg(pool);
    await recordInbox(tx, "a", "old");
    await recordInbox(tx, "a", "new");
    await pool.query("UPDATE inbox_events SET processed_at = now() - interval '30 days' WHERE event_id = 'old'");
    expect(await pruneInbox(tx, new Date(Date.now() - 14 * 24 * 3600_000))).toBe(1);
    expect(await recordInbox(tx, "a", "new")).toBe(false);
  });

  it("prunes on a timer with startInboxPruner, keeping rows younger than the retention", async () => {
    const tx = sqlTxFromPg(pool);
    await recordInbox(tx, "p", "ancient");
    await recordInbox(tx, "p", "recent");
    await pool.query("UPDATE inbox_events SET processed_at = now() - interval '15 days' WHERE consumer = 'p' AND event_id = 'ancient'");
    const logged: string[] = [];
    const pruner = startInboxPruner({ pool, log: { info: (_o, m) => void logged.push(m ?? ""), warn: () => undefined }, intervalMs: 50 });
    try {
      for (let i = 0; i < 100 && logged.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(logged).toContain("inbox: pruned rows of old events");
      const left = await pool.query<{ event_id: string }>("SELECT event_id FROM inbox_events WHERE consumer = 'p' ORDER BY event_id");
      expect(left.rows.map((r) => r.event_id)).toEqual(["recent"]);
      expect(await pruner.pruneNow()).toBe(0);
    } finally {
      await pruner.stop();
    }
    expect(() => startInboxPruner({ pool, log: console, intervalMs: 0 })).toThrow(/intervalMs/);
  });
});

describe("consumer with inbox", () => {
  it("applies an event published three times under different msg ids once", async () => {
    const name = `dup-${uniq()}`;
    const subject = `${SUBJ}.dup.${name}`;
    const eventId = randomUUID();
    for (let i = 0; i < 3; i++) {
      await publishEvent(js, subject, encode(JSON.stringify({ eventId, counter: name })), { msgId: `${eventId}-${i}` });
    }
    let handled = 0;
    consume(`dup_${uniq()}`, subject, async (m) => {
      await applyOnce(m);
      handled++;
      return "ack";
    });
    await waitFor("three deliveries handled", () => handled === 3);
    expect(await counter(name)).toBe(1);
  });

  it("applies nothing twice when a processed event is redelivered after a nak", async () => {
    const name = `nak-${uniq()}`;
    const subject = `${SUBJ}.nak.${name}`;
    await publishEvent(js, subject, encode(JSON.stringify({ eventId: randomUUID(), counter: name })), { msgId: randomUUID() });
    const applied: boolean[] = [];
    consume(`nak_${uniq()}`, subject, async (m) => {
      applied.push(await applyOnce(m));
      // First delivery: the effect committed but the ack is "lost" (we ask for a redelivery instead).
      return m.deliveryCount === 1 ? "retry" : "ack";
    });
    await waitFor("redelivery handled", () => applied.length === 2);
    expect(applied).toEqual([true, false]);
    expect(await counter(name)).toBe(1);
  });

  it("applies nothing twice when a consumer dies mid-batch and its messages are redelivered", async () => {
    const name = `kill-${uniq()}`;
    const subject = `${SUBJ}.kill.${name}`;
    const durable = `kill_${uniq()}`;
    const total = 20;
    for (let i = 0; i < total; i++) {
      await publishEvent(js, subject, encode(JSON.stringify({ eventId: `ev-${name}-${i}`, counter: name })), { msgId: randomUUID() });
    }
    // Consumer A acks its first 6 events; after that its handlers "hang" after committing the effect, before the
    // ack, so its 4 slots end up holding 4 applied but unacknowledged events.
    const ncA = await connectNats({ servers: testServers().natsUrl, name: "kit-inbox-victim", log: captureLog() });
    const hang = gate();
    let appliedByA = 0;
    let seenByA = 0;
    const a = runConsumer({
      js: jetstream(ncA), stream: STREAM, durable, filterSubject: subject, ackWaitMs: 1000, concurrency: 4,
      backoffMs: [100], log: captureLog(), handle: async (m) => {
        const n = ++seenByA;
        if (await applyOnce(m)) appliedByA++;
        if (n > 6) await hang.wait;
        return "ack";
      },
    });
    await waitFor("consumer A mid-batch", () => appliedByA === 10);
    // Kill A: its connection goes away with handlers still holding unacked (but applied) messages.
    await ncA.close();
    let redeliveredToB = 0;
    let appliedByB = 0;
    consume(durable, subject, async (m) => {
      if (m.deliveryCount > 1) redeliveredToB++;
      if (await applyOnce(m)) appliedByB++;
      return "ack";
    }, { ackWaitMs: 1000, concurrency: 4 });
    await waitFor("all events applied", async () => (await counter(name)) === total);
    // Let every outstanding redelivery arrive; none may change the count.
    await waitFor("consumer B settled", async () => {
      const info = await jsm.consumers.info(STREAM, durable);
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
    hang.open();
    await a.stop();
    const { rows } = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM inbox_events WHERE consumer = $1 AND event_id LIKE $2",
      [CONSUMER, `ev-${name}-%`]);
    console.log(`[inbox] consumer killed mid-batch: A applied ${appliedByA}, B applied ${appliedByB}, ` +
      `${redeliveredToB} redeliveries to B; counter ${await counter(name)} of ${total}`);
    expect(redeliveredToB).toBeGreaterThan(0); // the scenario really redelivered applied events
    expect(appliedByA + appliedByB).toBe(total);
    expect(await counter(name)).toBe(total);
    expect(rows[0]?.n).toBe(total);
  });
});
