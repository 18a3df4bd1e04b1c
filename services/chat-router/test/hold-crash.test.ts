// RELIABILITY.md (issue 20 item 5): chat-router killed (SIGKILL) after billing placed a reply's hold and before the
// hold id reached the message. A real chat-router child process is held inside the window by a test trigger (the
// write waits for a lock this test holds) and killed there; its in-flight write never commits. The surviving
// replica's sweeper finds the hold through billing (ListOpenHolds by reference, the assistant message id) and
// settles it within a sweep instead of at its deadline (CHAT_HOLD_TTL, 30 min):
// - the exact reserve, recorded by the reply's first write (here its first checkpoint, which the trigger holds): the
//   reply goes stale with no hold id; the stale-reply sweep adopts the hold placed for it and releases it (no
//   checkpoint committed, so nothing is billed);
// - the speculative reserve (key `<message id>/<uuid>`), placed together with storing the message: the message is
//   never stored; the hold sweep releases the hold whose message does not exist.
// And killed after billing's Commit and before the final state of a short reply (no checkpoint yet, so the final
// state is also the write that records the hold): no open hold is left; the sweep finds the committed one by the
// message id (ListHolds) and finishes the reply with that charge and its usage event, once.
import { fromBinary } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { UsageRecordedSchema, type UsageRecorded } from "@luna/contracts/luna/events/v1/usage_events_pb.js";
import { startVllmSim, type VllmSim } from "@luna/sim-vllm";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sendMessageIds } from "../src/domain/ids.js";
import { USAGE_RECORDED_SUBJECT } from "../src/index.js";
import { startPlatform, waitFor, type Platform } from "./harness.js";

const LOCK = 20_520_015;
let platform: Platform;
let sim: VllmSim;
let db: pg.Client;

beforeAll(async () => {
  sim = await startVllmSim({ models: ["sim-model:4096"], outputTokens: { min: 200, max: 200 }, faults: { slowTokenMs: 50 } });
  platform = await startPlatform({ chatEnv: { CHAT_STALE_STREAM_AFTER: "1s", CHAT_ORPHAN_HOLD_GRACE: "1s" } });
  await platform.addModel({ id: "m-crash", baseUrls: [sim.url], contextWindow: 4096, maxOutputTokens: 256 });
  db = new pg.Client({ connectionString: platform.dbs.chat.url });
  await db.connect();
  const name = (await db.query<{ n: string }>("SELECT current_database() AS n")).rows[0]!.n;
  // A killed client's backend notices the closed socket while it waits (as it does at its next read in production).
  await db.query(`ALTER DATABASE "${name}" SET client_connection_check_interval = '100ms'`);
  await db.query(`CREATE FUNCTION luna_test_hold_window() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN PERFORM pg_advisory_xact_lock(${LOCK}); RETURN NEW; END $$`);
}, 60_000);

afterAll(async () => {
  await db?.end();
  await platform?.stop();
  await sim?.close();
});

const waiters = async () =>
  (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'advisory'")).rows[0]!.n;

/** The idempotency key a hold was reserved with: the message id (exact) or `<message id>/<uuid>` (speculative). */
async function keyOf(holdId: string): Promise<string> {
  const b = new pg.Client({ connectionString: platform.dbs.billing.url });
  await b.connect();
  try {
    return (await b.query<{ k: string }>("SELECT idempotency_key AS k FROM holds WHERE id = $1", [holdId])).rows[0]!.k;
  } finally {
    await b.end();
  }
}

const openHolds = (reference: string) => platform.billing.ledger.store.listOpenHolds({ reason: "chat", reference, limit: 10 });

/** Every chat hold placed for a message, whatever its status. */
const allHolds = (reference: string) => platform.billing.ledger.store.listHolds({ reason: "chat", reference, limit: 10 });

/**
 * Sends a message through a chat-router child while `trigger` (a CREATE TRIGGER on messages) makes the chosen write
 * wait, and kills the child once billing holds credits for the reply (or, with `committed`, has charged them) and the
 * write waits. Returns the reply's id.
 */
async function crashInWindow(trigger: string, conversationOnChild: boolean, opts: { modelId?: string; env?: Record<string, string>; committed?: boolean } = {}):
Promise<{ userId: string; messageId: string; holdIds: string[] }> {
  const u = await platform.user(10_000n);
  const doomed = await platform.spawnChatRouter(opts.env);
  const child = doomed.client(u.token);
  const held = async (messageId: string) =>
    opts.committed ? (await allHolds(messageId)).filter((h) => h.status === "committed") : await openHolds(messageId);
  // A conversation created on the child is known to it (its history is empty): it reserves speculatively.
  const create = () => (conversationOnChild ? child : u.chat).createConversation({ modelId: opts.modelId ?? "m-crash" });
  let conversationId = "";
  await waitFor(async () => {
    conversationId = (await create().catch(() => ({ conversation: undefined }))).conversation?.id ?? "";
    return conversationId !== "";
  }, "the child sees the model", 20_000);
  const messageId = sendMessageIds(conversationId, "c1").assistantMessageId;
  await db.query(trigger);
  await db.query("SELECT pg_advisory_lock($1)", [LOCK]);
  const stream = (async () => {
    for await (const _ of child.sendMessage({ conversationId, text: "Tell me a long story", clientMessageId: "c1" })) void _;
  })().catch((e: unknown) => ConnectError.from(e));
  await waitFor(async () => (await held(messageId)).length > 0 && (await waiters()) >= 1, "a hold placed and the write waiting", 20_000);
  const holdIds = (await held(messageId)).map((h) => h.id);
  doomed.child.kill("SIGKILL");
  await new Promise((r) => doomed.child.once("exit", r));
  await stream;
  await waitFor(async () => (await waiters()) === 0, "the killed process's backends gone");
  await db.query("SELECT pg_advisory_unlock($1)", [LOCK]);
  await db.query("DROP TRIGGER luna_test_hold_window ON messages");
  return { userId: u.id, messageId, holdIds };
}

describe("chat-router killed between the reserve and recording the hold", () => {
  it("exact reserve: the reply has no hold id; the stale-reply sweep finds the hold by the message id and releases it", async () => {
    const c = await crashInWindow(`CREATE TRIGGER luna_test_hold_window BEFORE UPDATE ON messages FOR EACH ROW
      WHEN (NEW.hold_id IS DISTINCT FROM OLD.hold_id) EXECUTE FUNCTION luna_test_hold_window()`, false);
    expect(c.holdIds).toHaveLength(1);
    expect(await keyOf(c.holdIds[0]!)).toBe(c.messageId);
    const row = await db.query("SELECT status, hold_id FROM messages WHERE id = $1", [c.messageId]);
    expect(row.rows[0]).toEqual({ status: "streaming", hold_id: null });
    expect(await platform.available(c.userId)).toBeLessThan(10_000n);

    await new Promise((r) => setTimeout(r, 1100)); // CHAT_STALE_STREAM_AFTER
    await platform.chat.module.sweep();
    expect((await db.query("SELECT status, error_code FROM messages WHERE id = $1", [c.messageId])).rows[0]).toEqual({ status: "failed", error_code: "interrupted" });
    expect(await openHolds(c.messageId)).toEqual([]);
    const hold = (await platform.billing.ledger.store.getHold(c.holdIds[0]!))!;
    expect(hold.status).toBe("released");
    expect(await platform.available(c.userId)).toBe(10_000n);
    await platform.assertInvariants();
  }, 90_000);

  it("speculative reserve: the message is never stored; the hold sweep releases the hold whose message does not exist", async () => {
    const c = await crashInWindow(`CREATE TRIGGER luna_test_hold_window BEFORE INSERT ON messages FOR EACH ROW
      EXECUTE FUNCTION luna_test_hold_window()`, true);
    expect(c.holdIds).toHaveLength(1);
    expect(await keyOf(c.holdIds[0]!)).toMatch(new RegExp(`^${c.messageId}/[0-9a-f-]{36}$`));
    const key = (await db.query("SELECT 1 FROM messages WHERE id = $1", [c.messageId])).rowCount;
    expect(key).toBe(0);
    expect(await platform.available(c.userId)).toBeLessThan(10_000n);

    // Younger than CHAT_ORPHAN_HOLD_GRACE: left alone (its request might still be storing its message).
    await platform.chat.module.sweep();
    expect(await openHolds(c.messageId)).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 1100));
    await platform.chat.module.sweep();
    expect(await openHolds(c.messageId)).toEqual([]);
    expect((await platform.billing.ledger.store.getHold(c.holdIds[0]!))!.status).toBe("released");
    expect(await platform.available(c.userId)).toBe(10_000n);
    await platform.assertInvariants();
  }, 90_000);

  it("leaves the holds of live replies alone: a recorded hold, and one whose id is not written yet; releases a leftover", async () => {
    const other = await platform.startReplica(); // sweeps; the replies stream on the first replica
    const u = await platform.user(10_000n);
    const c1 = (await u.chat.createConversation({ modelId: "m-crash" })).conversation!.id;
    const c2 = (await u.chat.createConversation({ modelId: "m-crash" })).conversation!.id;
    const m1 = sendMessageIds(c1, "live1").assistantMessageId;
    const m2 = sendMessageIds(c2, "live2").assistantMessageId;
    const drain = (conversationId: string, clientMessageId: string) =>
      (async () => { for await (const _ of u.chat.sendMessage({ conversationId, text: "Tell me a long story", clientMessageId })) void _; })();
    const streams = [drain(c1, "live1"), drain(c2, "live2")];
    await waitFor(async () => (await db.query("SELECT count(*)::int AS n FROM messages WHERE id = ANY($1::uuid[]) AND hold_id IS NOT NULL", [[m1, m2]])).rows[0].n === 2,
      "both holds recorded");
    // Reply 2 as if its hold id write had not landed yet; reply 1 with a leftover hold (a speculative one not released).
    await db.query("UPDATE messages SET hold_id = NULL WHERE id = $1", [m2]);
    const leftover = await platform.billing.ledger.reserve({ accountId: u.id, amount: 7n, reason: "chat", reference: m1, idempotencyKey: `${m1}/leftover`, ttlMs: 600_000 });
    await new Promise((r) => setTimeout(r, 1100)); // CHAT_ORPHAN_HOLD_GRACE; heartbeats stay fresh (200 ms checkpoints)
    await other.module.sweep();
    expect((await platform.billing.ledger.store.getHold(leftover.result.holdId))!.status).toBe("released");
    expect((await openHolds(m1)).map((h) => h.id)).not.toContain(leftover.result.holdId);
    expect(await openHolds(m1)).toHaveLength(1);
    expect(await openHolds(m2)).toHaveLength(1);
    await Promise.all(streams);
    // Both replies settled by their own run.
    expect(await openHolds(m1)).toEqual([]);
    expect(await openHolds(m2)).toEqual([]);
    expect((await db.query("SELECT count(*)::int AS n FROM messages WHERE id = ANY($1::uuid[]) AND status = 'complete' AND credits_charged > 0", [[m1, m2]])).rows[0].n).toBe(2);
    await platform.assertInvariants();
  }, 90_000);
});

describe("chat-router killed after billing's Commit and before storing a short reply's final state", () => {
  it("the sweep finds the committed hold by the message id: the reply carries the ledger's charge and its usage event, once", async () => {
    const sim2 = await startVllmSim({ models: ["sim-model:4096"], outputTokens: { min: 6, max: 6 } });
    try {
      await platform.addModel({ id: "m-short", baseUrls: [sim2.url], contextWindow: 4096, maxOutputTokens: 256 });
      // The final state is the reply's only write (no checkpoint within 60 s); the trigger holds exactly that write.
      const c = await crashInWindow(`CREATE TRIGGER luna_test_hold_window BEFORE UPDATE ON messages FOR EACH ROW
        WHEN (OLD.status = 'streaming' AND NEW.status <> 'streaming') EXECUTE FUNCTION luna_test_hold_window()`, false,
      { modelId: "m-short", env: { CHAT_CHECKPOINT_INTERVAL: "60s" }, committed: true });
      expect(c.holdIds).toHaveLength(1);
      expect(await openHolds(c.messageId)).toEqual([]);
      const hold = (await platform.billing.ledger.store.getHold(c.holdIds[0]!))!;
      expect(hold.status).toBe("committed");
      expect(hold.charged).toBeGreaterThan(0n);
      expect(await platform.available(c.userId)).toBe(10_000n - hold.charged);
      // The window: charged by the ledger, the row still streaming without its hold.
      expect((await db.query("SELECT status, hold_id, credits_charged::int AS charged FROM messages WHERE id = $1", [c.messageId])).rows[0])
        .toEqual({ status: "streaming", hold_id: null, charged: 0 });

      const events: UsageRecorded[] = [];
      const sub = platform.chat.nats.subscribe(USAGE_RECORDED_SUBJECT, { callback: (_e, m) => void events.push(fromBinary(UsageRecordedSchema, m.data)) });
      try {
        await new Promise((r) => setTimeout(r, 1100)); // CHAT_STALE_STREAM_AFTER
        expect(await platform.chat.module.sweep()).toBe(1);
        const row = (await db.query("SELECT status, error_code, credits_charged::text AS charged, balance_after::text AS balance FROM messages WHERE id = $1", [c.messageId])).rows[0];
        // balance_after is unknown here (the available credits after the reserve came with the write that never landed).
        expect(row).toEqual({ status: "failed", error_code: "interrupted", charged: hold.charged.toString(), balance: "0" });
        await waitFor(() => events.some((e) => e.reference === c.messageId), "usage.recorded of the swept reply");
        // Nothing left to sweep, nothing settled again; the event is not emitted a second time.
        expect(await platform.chat.module.sweep()).toBe(0);
        await new Promise((r) => setTimeout(r, 500));
      } finally {
        sub.unsubscribe();
      }
      const mine = events.filter((e) => e.reference === c.messageId);
      expect(mine).toHaveLength(1);
      expect(mine[0]).toMatchObject({ userId: c.userId, modelId: "m-short", feature: "chat", creditsCharged: hold.charged });
      expect((await allHolds(c.messageId)).map((h) => [h.id, h.status, h.charged])).toEqual([[hold.id, "committed", hold.charged]]);
      expect(await platform.available(c.userId)).toBe(10_000n - hold.charged);
      const charges = await platform.billing.ledger.store.listHistory(c.userId, 10);
      expect(charges.filter((x) => x.kind === "charge")).toHaveLength(1);
      await platform.assertInvariants();
    } finally {
      await sim2.close();
    }
  }, 90_000);
});
