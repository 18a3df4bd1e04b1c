// Auth's user events through real NATS JetStream: the sign-up grant happens once per user whatever is redelivered
// or re-published, user.deleted closes the account and releases its holds, and a poison message does not stop the
// consumer.
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { UserCreatedSchema, UserDeletedSchema } from "@luna/contracts/luna/events/v1/user_events_pb.js";
import { connectNats, ensureStreams, publishEvent } from "@luna/kit";
import { startDedicatedNats } from "@luna/kit/testing";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { handleUserEvent, startUserEventConsumer, USER_CREATED_SUBJECT, USER_DELETED_SUBJECT } from "../src/events/user-events.js";
import { newAccountId, openLedgerDb, reserveInput, type LedgerDb } from "./helpers.js";

const log = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined };

let t: LedgerDb;
let nats: Awaited<ReturnType<typeof startDedicatedNats>>;
let nc: Awaited<ReturnType<typeof connectNats>>;
let js: JetStreamClient;
let consumer: { stop(): Promise<void>; ready: Promise<void> };

beforeAll(async () => {
  t = await openLedgerDb();
  nats = await startDedicatedNats();
  nc = await connectNats({ servers: nats.url, name: "billing-test", log });
  await ensureStreams(nc);
  js = jetstream(nc);
  consumer = startUserEventConsumer({ js, pool: t.pool, ledger: t.ledger, log });
  await consumer.ready;
});
afterEach(async () => {
  await t.assertInvariants();
});
afterAll(async () => {
  await consumer?.stop();
  await nc?.close();
  await nats?.dispose();
  await t?.close();
});

const created = (userId: string, eventId = randomUUID()) => ({
  eventId,
  data: toBinary(UserCreatedSchema, create(UserCreatedSchema, {
    meta: { eventId, occurredAt: timestampNow(), subjectId: userId },
    userId,
    email: `${userId}@example.com`,
    role: "user",
  })),
});

const deleted = (userId: string, eventId = randomUUID()) => ({
  eventId,
  data: toBinary(UserDeletedSchema, create(UserDeletedSchema, { meta: { eventId, occurredAt: timestampNow(), subjectId: userId }, userId })),
});

async function eventually<T>(read: () => Promise<T>, ok: (v: T) => boolean, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: last ${String(v)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

it("grants the sign-up credits exactly once per user, under re-publish and duplicate events", async () => {
  const user = newAccountId();
  const ev = created(user);
  // the same event published three times (as a relay retry with a new Nats-Msg-Id would), plus a second
  // user.created event for the same user
  for (let i = 0; i < 3; i++) await publishEvent(js, USER_CREATED_SUBJECT, ev.data, { msgId: `${ev.eventId}-${i}` });
  const other = created(user);
  await publishEvent(js, USER_CREATED_SUBJECT, other.data, { msgId: other.eventId });
  // a marker event after them: once it is applied, everything before it was too (one consumer, in order)
  const marker = newAccountId();
  const m = created(marker);
  await publishEvent(js, USER_CREATED_SUBJECT, m.data, { msgId: m.eventId });
  await eventually(() => t.store.getAccount(marker), (a) => a?.balance === 1000n, "marker grant");

  expect(await t.store.getAccount(user)).toMatchObject({ status: "open", balance: 1000n, held: 0n });
  const grants = await t.pool.query(`SELECT count(*)::int AS n FROM ledger_transfers WHERE credit_account_id = $1 AND kind = 'grant'`, [user]);
  expect(grants.rows[0].n).toBe(1);
  const inbox = await t.pool.query(`SELECT count(*)::int AS n FROM inbox_events WHERE event_id = ANY($1)`, [[ev.eventId, other.eventId]]);
  expect(inbox.rows[0].n).toBe(2);
});

it("a delivery handled twice at once (ack timeout while the first is still working) applies once", async () => {
  const user = newAccountId();
  const ev = created(user);
  const msg = { subject: USER_CREATED_SUBJECT, data: ev.data, msgId: ev.eventId };
  const results = await Promise.all(Array.from({ length: 5 }, () => handleUserEvent({ pool: t.pool, ledger: t.ledger, log }, msg)));
  expect(results).toEqual(["ack", "ack", "ack", "ack", "ack"]);
  expect(await t.store.getAccount(user)).toMatchObject({ balance: 1000n });
});

it("user.deleted closes the account and releases its open holds; nothing new can be reserved", async () => {
  const user = newAccountId();
  const ev = created(user);
  await publishEvent(js, USER_CREATED_SUBJECT, ev.data, { msgId: ev.eventId });
  await eventually(() => t.store.getAccount(user), (a) => a?.balance === 1000n, "grant");
  const hold = await t.store.reserve(reserveInput(user, 300n, "in-flight"));
  const del = deleted(user);
  await publishEvent(js, USER_DELETED_SUBJECT, del.data, { msgId: del.eventId });
  const account = await eventually(() => t.store.getAccount(user), (a) => a?.status === "closed" && a.held === 0n, "close");
  expect(account).toMatchObject({ balance: 1000n, held: 0n, openHolds: 0 });
  expect((await t.store.getHold(hold.result.holdId))!.status).toBe("released");
  await expect(t.store.reserve(reserveInput(user, 1n, "after"))).rejects.toThrow(/is closed/);
});

it("a poison message is dead-lettered and the consumer goes on", async () => {
  await publishEvent(js, USER_CREATED_SUBJECT, new Uint8Array([0xff, 0xff, 0xff]), { msgId: randomUUID() });
  const noUser = created("");
  await publishEvent(js, USER_CREATED_SUBJECT, noUser.data, { msgId: noUser.eventId });
  const user = newAccountId();
  const ev = created(user);
  await publishEvent(js, USER_CREATED_SUBJECT, ev.data, { msgId: ev.eventId });
  await eventually(() => t.store.getAccount(user), (a) => a?.balance === 1000n, "grant after poison");
  expect(await handleUserEvent({ pool: t.pool, ledger: t.ledger, log }, { subject: USER_CREATED_SUBJECT, data: new Uint8Array([1, 2, 3]), msgId: "x" })).toBe("term");
  expect(await handleUserEvent({ pool: t.pool, ledger: t.ledger, log }, { subject: "luna.events.user.renamed", data: new Uint8Array(), msgId: "y" })).toBe("ack");
});
