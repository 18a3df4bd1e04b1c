// Transactional outbox against real Postgres and NATS: order, rollback, wake-up, concurrent relays, crash between
// publish and mark, trace context. The NATS-restart case is in restart.test.ts (it needs a dedicated server).
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type pg from "pg";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { ROOT_CONTEXT, context, trace, TraceFlags } from "@opentelemetry/api";
import { createTestDatabase, testServers } from "../../src/testing/index.js";
import { connectNats, ensureStreams, runConsumer } from "../../src/nats.js";
import { createMetrics } from "../../src/metrics.js";
import { MAX_OUTBOX_PAYLOAD_BYTES, OUTBOX_BACKLOG_METRICS, OUTBOX_CHANNEL, enqueueEvent, pruneOutbox, sqlTxFromPg, startOutboxRelay } from "../../src/outbox.js";
import type { OutboxRelay } from "../../src/outbox.js";
import { ensureContextManager } from "../../src/tracing.js";
import { OUTBOX_INBOX_SQL, captureLog, testPool, decode, encode, inTransaction, repeated, streamMessages, uniq, waitFor } from "./helpers.js";

const id = uniq();
const STREAM = `T_OUTBOX_${id}`;
const SUBJ = `tob${id}`;

let db: { url: string; drop(): Promise<void> };
let pool: pg.Pool;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
const relays: OutboxRelay[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  pool = testPool(db.url, { max: 8 });
  await pool.query(OUTBOX_INBOX_SQL);
  nc = await connectNats({ servers: testServers().natsUrl, name: "kit-outbox-test", log: captureLog() });
  js = jetstream(nc);
  jsm = await jetstreamManager(nc);
});

beforeEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()));
  await pool.query("TRUNCATE outbox_events");
  // A fresh stream per test, so the stream's contents are exactly what this test's relays published.
  await jsm.streams.delete(STREAM).catch(() => undefined);
  await ensureStreams(nc, [{ name: STREAM, subjects: [`${SUBJ}.>`], retention: "limits", maxAgeMs: 0 }]);
});

afterAll(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()));
  await jsm?.streams.delete(STREAM).catch(() => undefined);
  await nc?.drain();
  await pool?.end();
  await db?.drop();
});

function relay(opts: Partial<Parameters<typeof startOutboxRelay>[0]> = {}): OutboxRelay {
  const r = startOutboxRelay({ pool, js, log: captureLog(), pollIntervalMs: 50, maxBackoffMs: 200, ...opts });
  relays.push(r);
  return r;
}

async function enqueueInTx(n: number, subject = `${SUBJ}.thing.happened`): Promise<string[]> {
  return inTransaction(pool, async (client) => {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const eid = randomUUID();
      await enqueueEvent(sqlTxFromPg(client), { id: eid, subject, payload: encode(`payload-${eid}`) });
      ids.push(eid);
    }
    return ids;
  });
}

async function pendingRows(): Promise<number> {
  const { rows } = await pool.query<{ n: string }>("SELECT count(*) AS n FROM outbox_events WHERE published_at IS NULL");
  return Number(rows[0]?.n);
}

describe("outbox relay", () => {
  it("publishes committed events in seq order with Nats-Msg-Id = event id, and marks them published", async () => {
    const ids: string[] = [];
    for (let t = 0; t < 10; t++) ids.push(...await enqueueInTx(3, `${SUBJ}.${t % 2 === 0 ? "a" : "b"}.x`));
    await inTransaction(pool, (c) => enqueueEvent(sqlTxFromPg(c), {
      id: randomUUID(), subject: `${SUBJ}.a.x`, payload: encode("with-header"), headers: { "Luna-Kind": "test" },
    }));
    const r = relay();
    await waitFor("outbox drained", async () => (await r.pending()) === 0);
    const msgs = await streamMessages(jsm, STREAM);
    expect(msgs.slice(0, 30).map((m) => m.msgId)).toEqual(ids);
    expect(msgs).toHaveLength(31);
    expect(decode(msgs[0]!.data)).toBe(`payload-${ids[0]}`);
    expect(msgs[30]!.headers["Luna-Kind"]).toBe("test");
    const { rows } = await pool.query("SELECT count(*)::int AS n FROM outbox_events WHERE published_at IS NOT NULL");
    expect(rows[0].n).toBe(31);
  });

  it("never publishes the event of a rolled-back transaction", async () => {
    const rolledBack = randomUUID();
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      await enqueueEvent(sqlTxFromPg(client), { id: rolledBack, subject: `${SUBJ}.x`, payload: encode("no") });
      await client.query("ROLLBACK");
    } finally {
      client.release();
    }
    const [committed] = await enqueueInTx(1);
    const r = relay();
    await waitFor("outbox drained", async () => (await r.pending()) === 0);
    await r.stop();
    const msgs = await streamMessages(jsm, STREAM);
    expect(msgs.map((m) => m.msgId)).toEqual([committed]);
  });

  it("rejects bad events at enqueue time, before anything is written", async () => {
    const tx = sqlTxFromPg(pool);
    const ok = { id: randomUUID(), subject: `${SUBJ}.x`, payload: encode("x") };
    await expect(enqueueEvent(tx, { ...ok, id: "not-a-uuid" })).rejects.toThrow(/UUID/);
    await expect(enqueueEvent(tx, { ...ok, subject: `${SUBJ}.*` })).rejects.toThrow(/subject/);
    await expect(enqueueEvent(tx, { ...ok, headers: { "X-A": "line\nbreak" } })).rejects.toThrow(/CR\/LF/);
    await expect(enqueueEvent(tx, { ...ok, payload: "text" as unknown as Uint8Array })).rejects.toThrow(/Uint8Array/);
    await expect(enqueueEvent(tx, { ...ok, payload: new Uint8Array(MAX_OUTBOX_PAYLOAD_BYTES + 1) })).rejects.toThrow(/limit/);
    const { rows } = await pool.query("SELECT count(*)::int AS n FROM outbox_events");
    expect(rows[0].n).toBe(0);
  });

  it("wakes on NOTIFY from another connection's commit instead of waiting for the poll", async () => {
    const r = relay({ pollIntervalMs: 120_000 });
    // The listener's start-up catch-up pass has nothing to publish; after it the relay idles for the long poll.
    await waitFor("relay idle", async () => (await r.pending()) === 0);
    await new Promise((res) => setTimeout(res, 300));
    const other = testPool(db.url, { max: 1 });
    try {
      const client = await other.connect();
      const eid = randomUUID();
      await client.query("BEGIN");
      await enqueueEvent(sqlTxFromPg(client), { id: eid, subject: `${SUBJ}.x`, payload: encode("notify") });
      await client.query("COMMIT");
      client.release();
      // Far shorter than the 120 s poll: only the NOTIFY can have woken the relay.
      await waitFor("event published", async () => (await streamMessages(jsm, STREAM)).some((m) => m.msgId === eid),
        { timeoutMs: 10_000 });
    } finally {
      await other.end();
    }
  });

  it("kick() publishes at once after a commit", async () => {
    const r = relay({ pollIntervalMs: 120_000 });
    await waitFor("relay idle", async () => (await r.pending()) === 0);
    // Drop the NOTIFY route for this check: the trigger is disabled, so only kick() can wake the relay.
    await pool.query("ALTER TABLE outbox_events DISABLE TRIGGER outbox_events_notify");
    try {
      const [eid] = await enqueueInTx(1);
      r.kick();
      await waitFor("event published", async () => (await streamMessages(jsm, STREAM)).some((m) => m.msgId === eid),
        { timeoutMs: 10_000 });
    } finally {
      await pool.query("ALTER TABLE outbox_events ENABLE TRIGGER outbox_events_notify");
    }
  });

  it("publishes a batch together (acks awaited together) and marks it in one statement", async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const countingJs = {
      publish: async (...args: Parameters<JetStreamClient["publish"]>) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        try {
          return await js.publish(...args);
        } finally {
          inFlight--;
        }
      },
    };
    const ids = await enqueueInTx(10);
    const r = relay({ js: countingJs });
    await waitFor("outbox drained", async () => (await r.pending()) === 0);
    expect(maxInFlight).toBe(10);
    expect((await streamMessages(jsm, STREAM)).map((m) => m.msgId)).toEqual(ids);
  });

  it("after a failed publish, marks what was stored, retries the failed row on its own, then resumes", async () => {
    const ids = await enqueueInTx(6);
    const attempts: string[] = [];
    let failing = true;
    // The connection drops while the 3rd event is sent: it and every later one of the batch fail.
    const flakyJs = {
      publish: async (...args: Parameters<JetStreamClient["publish"]>) => {
        const msgId = (args[2] as { msgID: string }).msgID;
        attempts.push(msgId);
        if (failing && ids.indexOf(msgId) >= 2) throw new Error("connection lost");
        return js.publish(...args);
      },
    };
    const r = relay({ js: flakyJs, maxBackoffMs: 100 });
    await waitFor("first batch tried", () => attempts.length >= 6);
    await waitFor("retried alone", () => attempts.length >= 7);
    expect(await pendingRows()).toBe(4); // the two stored ones are marked
    failing = false;
    await waitFor("outbox drained", async () => (await r.pending()) === 0);
    // The retry after the failure carried one row; then full batches again.
    expect(attempts.slice(6, 7)).toEqual([ids[2]]);
    const msgs = await streamMessages(jsm, STREAM);
    expect(msgs.map((m) => m.msgId)).toEqual(ids);
  });

  it("notifyDelayMs: the commits of a burst share one batch, and a kick ends the wait at once", async () => {
    const batches: number[] = [];
    const r = relay({ pollIntervalMs: 120_000, notifyDelayMs: 1000, onPublished: (i) => batches.push(i.count) });
    await waitFor("relay idle", async () => (await r.pending()) === 0);
    await new Promise((res) => setTimeout(res, 300));
    batches.length = 0;
    // Five commits, each with its NOTIFY: one pass publishes them all, in order.
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(...await enqueueInTx(1));
    await waitFor("burst published", async () => (await r.pending()) === 0, { timeoutMs: 10_000 });
    expect(batches).toEqual([5]);
    expect((await streamMessages(jsm, STREAM)).map((m) => m.msgId)).toEqual(ids);

    // A NOTIFY starts a long wait (the delay raised by a fresh relay); a kick ends it: both rows go out together.
    await Promise.all(relays.splice(0).map((x) => x.stop()));
    batches.length = 0;
    const slow = relay({ pollIntervalMs: 120_000, notifyDelayMs: 120_000, onPublished: (i) => batches.push(i.count) });
    await waitFor("relay idle", async () => (await slow.pending()) === 0);
    await new Promise((res) => setTimeout(res, 300));
    const [first] = await enqueueInTx(1);
    await new Promise((res) => setTimeout(res, 200));
    expect(await pendingRows()).toBe(1); // gathering, not published yet
    const [second] = await enqueueInTx(1);
    slow.kick();
    await waitFor("kicked batch published", async () => (await slow.pending()) === 0, { timeoutMs: 10_000 });
    expect(batches).toEqual([2]);
    expect((await streamMessages(jsm, STREAM)).map((m) => m.msgId).slice(-2)).toEqual([first, second]);
    // stop() ends a wait too.
    await enqueueInTx(1);
    await slow.stop();
  });

  it("a NOTIFY with nothing to publish costs one probe, not a batch transaction", async () => {
    const statements: string[] = [];
    const probePool = testPool(db.url, { max: 3 });
    probePool.on("connect", (client) => {
      const query = client.query.bind(client) as (...a: unknown[]) => unknown;
      (client as unknown as { query: (...a: unknown[]) => unknown }).query = (...a: unknown[]) => {
        const text = typeof a[0] === "string" ? a[0] : (a[0] as { text?: string } | undefined)?.text ?? "";
        statements.push(text.trim().split(/\s+/).slice(0, 2).join(" "));
        return query(...a);
      };
    });
    try {
      const r = relay({ pool: probePool, pollIntervalMs: 120_000 });
      await waitFor("relay idle", async () => (await r.pending()) === 0);
      await new Promise((res) => setTimeout(res, 300));
      statements.length = 0;
      await pool.query(`NOTIFY ${OUTBOX_CHANNEL}`);
      await waitFor("probed", () => statements.includes("SELECT EXISTS"));
      await new Promise((res) => setTimeout(res, 200));
      expect(statements).toEqual(["SELECT EXISTS"]);
      // A NOTIFY for a commit with an event: the probe finds it and a batch publishes it.
      const [eid] = await enqueueInTx(1);
      await waitFor("event published", async () => (await streamMessages(jsm, STREAM)).some((m) => m.msgId === eid));
      expect(statements.filter((q) => q.startsWith("BEGIN;"))).toHaveLength(1);
    } finally {
      await Promise.all(relays.splice(0).map((x) => x.stop()));
      await probePool.end();
    }
  });

  it("two relays running at once publish every event exactly once, each writer's events in order", async () => {
    const poolA = testPool(db.url, { max: 3 });
    const poolB = testPool(db.url, { max: 3 });
    try {
      const published = { a: 0, b: 0 };
      const a = relay({ pool: poolA, batchSize: 7, onPublished: (i) => { published.a += i.count; } });
      const b = relay({ pool: poolB, batchSize: 7, onPublished: (i) => { published.b += i.count; } });
      // Each writer stands for one aggregate: its transactions are sequential, so its events have a causal order
      // (concurrent writers' transactions commit in any order, and no order exists between them).
      const written = await Promise.all(Array.from({ length: 8 }, async (_, w) => {
        const ids: string[] = [];
        for (let i = 0; i < 10; i++) {
          ids.push(...await enqueueInTx(3, `${SUBJ}.writer${w}`));
          a.kick();
          b.kick();
        }
        return ids;
      }));
      await waitFor("outbox drained", async () => (await pendingRows()) === 0);
      await Promise.all([a.stop(), b.stop()]);
      const msgs = await streamMessages(jsm, STREAM);
      console.log(`[outbox] two relays: 240 events, ${msgs.length} stored, ${repeated(msgs.map((m) => m.msgId)).length} ` +
        `duplicated; relay A published ${published.a}, relay B ${published.b}`);
      expect(repeated(msgs.map((m) => m.msgId))).toEqual([]);
      expect(msgs).toHaveLength(240);
      written.forEach((ids, w) => {
        expect(msgs.filter((m) => m.subject === `${SUBJ}.writer${w}`).map((m) => m.msgId)).toEqual(ids);
      });
    } finally {
      await poolA.end();
      await poolB.end();
    }
  });

  it("re-publishes after a crash between publish and mark, and the stream drops the repeats", async () => {
    const appName = `relay-crash-${uniq()}`;
    const relayPool = testPool(db.url, { max: 3, application_name: appName });
    const killer = testPool(db.url, { max: 1 });
    try {
      const ids = [...await enqueueInTx(5), ...await enqueueInTx(5)];
      let publishes = 0;
      let crashed = false;
      // After the 4th publish of the batch reached the stream, the relay's database session dies: its transaction
      // (and so every mark of this batch) is lost, exactly as if the relay process had been killed at that point.
      const crashingJs = {
        publish: async (...args: Parameters<JetStreamClient["publish"]>) => {
          const ack = await js.publish(...args);
          if (++publishes === 4 && !crashed) {
            crashed = true;
            await killer.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", [appName]);
          }
          return ack;
        },
      };
      let duplicates = 0;
      const r = relay({ pool: relayPool, js: crashingJs, onPublished: (i) => { duplicates += i.duplicates; } });
      await waitFor("outbox drained", async () => (await pendingRows()) === 0);
      await r.stop();
      const msgs = await streamMessages(jsm, STREAM);
      console.log(`[outbox] crash between publish and mark: ${publishes} publishes, ${duplicates} deduplicated, ${msgs.length} stored`);
      expect(crashed).toBe(true);
      expect(duplicates).toBeGreaterThanOrEqual(4); // the re-published ones were recognised as duplicates
      expect(msgs.map((m) => m.msgId)).toEqual(ids);
    } finally {
      await relayPool.end();
      await killer.end();
    }
  });

  it("carries the writer's trace context to the consumer", async () => {
    ensureContextManager();
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: "00f067aa0ba902b7", traceFlags: TraceFlags.SAMPLED });
    const eid = randomUUID();
    await context.with(parent, () => inTransaction(pool, (c) =>
      enqueueEvent(sqlTxFromPg(c), { id: eid, subject: `${SUBJ}.traced`, payload: encode("t") })));
    relay();
    let seenTraceId: string | undefined;
    const consumer = runConsumer({
      js, stream: STREAM, durable: `traced_${uniq()}`, filterSubject: `${SUBJ}.traced`, log: captureLog(),
      handle: async () => {
        seenTraceId = trace.getActiveSpan()?.spanContext().traceId;
        return "ack";
      },
    });
    try {
      await waitFor("event consumed", () => seenTraceId);
      expect(seenTraceId).toBe(traceId);
      const [msg] = await streamMessages(jsm, STREAM);
      expect(msg?.headers.traceparent).toMatch(new RegExp(`^00-${traceId}-`));
    } finally {
      await consumer.stop();
    }
  });

  it("exports the backlog: the gauges rise while NATS is unreachable and fall to 0 once the relay catches up", async () => {
    // A real NATS connection that is closed: every publish fails as it would with the server gone.
    const deadNc = await connectNats({ servers: testServers().natsUrl, name: "kit-outbox-dead", log: captureLog() });
    const deadJs = jetstream(deadNc);
    await deadNc.close();
    let target: Pick<JetStreamClient, "publish"> = deadJs;
    const switchableJs = { publish: (...args: Parameters<JetStreamClient["publish"]>) => target.publish(...args) };
    const metrics = createMetrics({ service: "kit-test", defaultMetrics: false });
    const sample = async (name: string): Promise<number | undefined> => {
      const text = await metrics.registry.metrics();
      const m = new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, "m").exec(text);
      if (m && !m[0].includes('luna_service="kit-test"')) throw new Error(`no service label: ${m[0]}`);
      if (m && !m[0].includes('outbox="kit"')) throw new Error(`no outbox label: ${m[0]}`);
      return m ? Number(m[1]) : undefined;
    };
    const ids = await enqueueInTx(3);
    const r = relay({ js: switchableJs, metrics: { registry: metrics.registry, outbox: "kit", intervalMs: 100 } });
    await waitFor("backlog counted", async () => (await sample(OUTBOX_BACKLOG_METRICS.unpublished)) === 3);
    const first = (await sample(OUTBOX_BACKLOG_METRICS.oldest))!;
    await waitFor("oldest age rising", async () => (await sample(OUTBOX_BACKLOG_METRICS.oldest))! >= first + 0.5, { timeoutMs: 5_000 });
    expect(await pendingRows()).toBe(3); // nothing got through

    target = js; // NATS is back
    await waitFor("outbox drained", async () => (await r.pending()) === 0);
    await waitFor("gauges back to 0", async () =>
      (await sample(OUTBOX_BACKLOG_METRICS.oldest)) === 0 && (await sample(OUTBOX_BACKLOG_METRICS.unpublished)) === 0);
    expect((await streamMessages(jsm, STREAM)).map((m) => m.msgId)).toEqual(ids);

    // A second relay on the same registry (the all-in-one process) gets its own series, not a duplicate-metric error.
    const other = relay({ metrics: { registry: metrics.registry, outbox: "other", intervalMs: 100 } });
    await waitFor("second series", async () => (await metrics.registry.metrics()).includes('outbox="other"'));
    // Stopped relays report nothing rather than a frozen value.
    await other.stop();
    expect(await metrics.registry.metrics()).not.toContain('outbox="other"');
    expect(() => relay({ metrics: { registry: metrics.registry, outbox: "" } })).toThrow(/metrics.outbox/);
  });

  it("prunes only published rows older than the cutoff", async () => {
    const [published] = await enqueueInTx(1);
    const [unpublished] = await enqueueInTx(1);
    await pool.query("UPDATE outbox_events SET published_at = now() - interval '10 days' WHERE id = $1", [published]);
    const deleted = await pruneOutbox(sqlTxFromPg(pool), new Date(Date.now() - 7 * 24 * 3600_000));
    expect(deleted).toBe(1);
    const { rows } = await pool.query<{ id: string }>("SELECT id FROM outbox_events");
    expect(rows.map((r) => r.id)).toEqual([unpublished]);
  });
});
