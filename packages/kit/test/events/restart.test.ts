// The events reliability check (RELIABILITY.md, Events): restart NATS during a burst of state changes. Every
// committed change must be published once (outbox) and applied once (inbox): lost = 0, duplicated = 0.
// Runs on a NATS of its own (startDedicatedNats) with Luna's default streams.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type pg from "pg";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { createTestDatabase, startDedicatedNats } from "../../src/testing/index.js";
import type { DedicatedServer } from "../../src/testing/index.js";
import type { NatsServer } from "../../src/localstack/index.js";
import {
  DEADLETTER_STREAM, EVENTS_STREAM, IMAGE_JOBS_STREAM, connectNats, deadLetterSubject, ensureStreams, natsReady,
  publishEvent, runConsumer,
} from "../../src/nats.js";
import { enqueueEvent, sqlTxFromPg, startOutboxRelay } from "../../src/outbox.js";
import { recordInbox } from "../../src/inbox.js";
import { OUTBOX_INBOX_SQL, captureLog, decode, encode, inTransaction, repeated, streamMessages, testPool, waitFor } from "./helpers.js";

let nats: DedicatedServer<NatsServer>;
let db: { url: string; drop(): Promise<void> };
let pool: pg.Pool;
let ncWriter: NatsConnection; // the producing service
let ncReader: NatsConnection; // the consuming service
let jsm: JetStreamManager;

beforeAll(async () => {
  [nats, db] = await Promise.all([startDedicatedNats(), createTestDatabase()]);
  pool = testPool(db.url, { max: 6 });
  await pool.query(OUTBOX_INBOX_SQL);
  await pool.query("CREATE TABLE orders (id uuid PRIMARY KEY, n int NOT NULL)");
  await pool.query("CREATE TABLE effects (event_id text PRIMARY KEY, applied int NOT NULL)");
  ncWriter = await connectNats({ servers: nats.url, name: "writer", log: captureLog(), reconnectTimeWaitMs: 200 });
  ncReader = await connectNats({ servers: nats.url, name: "reader", log: captureLog(), reconnectTimeWaitMs: 200 });
  await ensureStreams(ncWriter);
  jsm = await jetstreamManager(ncWriter);
});

afterAll(async () => {
  await ncWriter?.close();
  await ncReader?.close();
  await pool?.end();
  await Promise.all([nats?.dispose(), db?.drop()]);
});

describe("NATS restart during a burst of state changes", () => {
  it("publishes every committed event once and applies every effect once", async () => {
    const relay = startOutboxRelay({ pool, js: jetstream(ncWriter), log: captureLog(), maxBackoffMs: 500, publishTimeoutMs: 1000 });
    let deliveries = 0;
    const consumer = runConsumer({
      js: jetstream(ncReader), stream: EVENTS_STREAM, durable: "restart-test", filterSubject: "luna.events.order.>",
      backoffMs: [100], log: captureLog(), concurrency: 2,
      handle: async (m) => {
        deliveries++;
        const { eventId } = JSON.parse(decode(m.data)) as { eventId: string };
        await inTransaction(pool, async (client) => {
          if (!(await recordInbox(sqlTxFromPg(client), "restart-test", eventId))) return;
          // Counting applications (instead of a plain insert) makes a double application visible.
          await client.query(
            "INSERT INTO effects (event_id, applied) VALUES ($1, 1) ON CONFLICT (event_id) DO UPDATE SET applied = effects.applied + 1",
            [eventId]);
        });
        return "ack";
      },
    });
    const committed: string[] = [];
    // One state change + its event per transaction, as a service handler does it.
    const change = async (): Promise<void> => {
      const eventId = randomUUID();
      await inTransaction(pool, async (client) => {
        await client.query("INSERT INTO orders (id, n) VALUES ($1, $2)", [eventId, committed.length]);
        await enqueueEvent(sqlTxFromPg(client), {
          id: eventId, subject: "luna.events.order.created", payload: encode(JSON.stringify({ eventId })),
        });
      });
      committed.push(eventId);
      relay.kick();
    };
    try {
      for (let i = 0; i < 60; i++) await change();
      await nats.stop();
      for (let i = 0; i < 120; i++) await change(); // NATS is down: the writes still commit
      expect(await relay.pending()).toBeGreaterThan(0);
      await expect(natsReady(ncWriter, 500)).rejects.toThrow();
      await nats.restart();
      for (let i = 0; i < 60; i++) await change();
      await waitFor("outbox drained", async () => (await relay.pending()) === 0, { timeoutMs: 60_000 });
      await natsReady(ncWriter);
      const { rows: applied } = await waitFor("effects applied", async () => {
        const r = await pool.query<{ event_id: string; applied: number }>("SELECT event_id, applied FROM effects");
        return r.rows.length >= committed.length && r;
      }, { timeoutMs: 60_000 });

      const stored = (await streamMessages(jsm, EVENTS_STREAM)).filter((m) => m.subject === "luna.events.order.created");
      const storedIds = stored.map((m) => m.msgId);
      const lost = committed.filter((eid) => !storedIds.includes(eid)).length;
      const duplicated = stored.length - new Set(storedIds).size;
      const doubleApplied = applied.filter((r) => r.applied !== 1).length;
      console.log(`[events] NATS restart during a burst: ${committed.length} committed, ${stored.length} stored, ` +
        `lost ${lost}, duplicated ${duplicated}; ${deliveries} deliveries, ${applied.length} effects, applied twice ${doubleApplied}`);
      expect(lost).toBe(0);
      expect(duplicated).toBe(0);
      expect(repeated(storedIds)).toEqual([]);
      expect(storedIds).toEqual(committed); // one writer: stream order = commit order
      expect(applied).toHaveLength(committed.length);
      expect(doubleApplied).toBe(0);
    } finally {
      await consumer.stop();
      await relay.stop();
    }
  });

  it("a consumer idle across a restart picks up messages published after it", async () => {
    const got: string[] = [];
    const consumer = runConsumer({
      js: jetstream(ncReader), stream: EVENTS_STREAM, durable: "idle-across-restart", filterSubject: "luna.events.ping.>",
      log: captureLog(), pullExpiresMs: 1000,
      handle: async (m) => { got.push(decode(m.data)); return "ack"; },
    });
    try {
      await consumer.ready;
      await publishEvent(jetstream(ncWriter), "luna.events.ping.a", encode("before"), { msgId: randomUUID() });
      await waitFor("before", () => got.includes("before"));
      await nats.restart();
      await waitFor("writer reconnected", async () => { await natsReady(ncWriter, 500); return true; });
      await publishEvent(jetstream(ncWriter), "luna.events.ping.a", encode("after"), { msgId: randomUUID() });
      await waitFor("after", () => got.includes("after"), { timeoutMs: 30_000 });
      expect(got).toEqual(["before", "after"]);
    } finally {
      await consumer.stop();
    }
  });
});

describe("default streams", () => {
  it("route dead letters of a work-queue consumer to LUNA_DEADLETTER and remove the job from the queue", async () => {
    expect(await jsm.streams.find(deadLetterSubject(IMAGE_JOBS_STREAM, "pool-sdxl"))).toBe(DEADLETTER_STREAM);
    expect(await jsm.streams.find("luna.events.user.created")).toBe(EVENTS_STREAM);
    expect(await jsm.streams.find("luna.image.jobs.sdxl")).toBe(IMAGE_JOBS_STREAM);
    const js = jetstream(ncWriter);
    await publishEvent(js, "luna.image.jobs.sdxl", encode("job-1"), { msgId: randomUUID() });
    let calls = 0;
    const worker = runConsumer({
      js, stream: IMAGE_JOBS_STREAM, durable: "pool-sdxl", filterSubject: "luna.image.jobs.sdxl", log: captureLog(),
      handle: async () => { calls++; return "term"; },
    });
    try {
      await waitFor("dead letter", async () => (await streamMessages(jsm, DEADLETTER_STREAM))
        .some((m) => m.subject === deadLetterSubject(IMAGE_JOBS_STREAM, "pool-sdxl") && decode(m.data) === "job-1"));
      await waitFor("job removed from the work queue", async () => (await jsm.streams.info(IMAGE_JOBS_STREAM)).state.messages === 0);
      expect(calls).toBe(1);
    } finally {
      await worker.stop();
    }
  });
});
