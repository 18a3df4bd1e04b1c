// Integration: the speculative reserve (CHAT_SPECULATIVE_RESERVE). When a replica knows a conversation's history, the
// credit hold is placed together with the first database and limit calls, for an upper bound of the prompt; it is
// used only when it covers the exact prompt with the full reply budget, released otherwise, and released when the
// message is refused. The ledger tells which hold served a reply: a speculative hold's idempotency key is the
// message id plus a suffix, the exact reserve's is the message id itself.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { Code, ConnectError } from "@connectrpc/connect";
import { startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { collect, startPlatform, waitFor, type ChatReplica, type Platform } from "./harness.js";

let platform: Platform;
let sim: VllmSim;
let slowSim: VllmSim;
let billingDb: pg.Pool;
/** A replica with the speculative reserve turned off. */
let exactOnly: ChatReplica;
/** Another replica (speculating), to change a conversation behind the first replica's back. */
let other: ChatReplica;

beforeAll(async () => {
  sim = await startVllmSim({ models: ["sim-model:4096"], outputTokens: { min: 20, max: 40 } });
  // Replies that stream for about a second, to hold the user's one stream slot.
  slowSim = await startVllmSim({ models: ["sim-model:4096"], outputTokens: { min: 100, max: 100 }, faults: { slowTokenMs: 10 } });
  platform = await startPlatform({ limits: { chatStreams: 1 } });
  await platform.addModel({ id: "m-fast", baseUrls: [sim.url], contextWindow: 4096, maxOutputTokens: 256 });
  await platform.addModel({ id: "m-slow", baseUrls: [slowSim.url], contextWindow: 4096, maxOutputTokens: 256 });
  exactOnly = await platform.startReplica({ CHAT_SPECULATIVE_RESERVE: "false" });
  other = await platform.startReplica();
  billingDb = new pg.Pool({ connectionString: platform.dbs.billing.url, max: 2 });
});

afterAll(async () => {
  await billingDb?.end();
  await platform?.stop();
  await sim?.close();
  await slowSim?.close();
});

interface HoldRow {
  amount: bigint;
  status: string;
  charged: bigint;
  speculative: boolean;
}

/** The holds placed for a reply, oldest first. */
async function holdsOf(messageId: string): Promise<HoldRow[]> {
  const r = await billingDb.query<{ amount: string; status: string; charged: string; idempotency_key: string }>(
    "SELECT amount, status, charged, idempotency_key FROM holds WHERE reference = $1 ORDER BY created_at, id", [messageId]);
  return r.rows.map((h) => ({ amount: BigInt(h.amount), status: h.status, charged: BigInt(h.charged), speculative: h.idempotency_key !== messageId }));
}

async function held(userId: string): Promise<bigint> {
  return (await platform.billing.ledger.store.getAccount(userId))!.held;
}

describe("speculative reserve", () => {
  it("serves a new conversation's messages on the replica that knows them with one early hold each", async () => {
    const u = await platform.user(10_000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-fast", title: "t", systemPrompt: "You are terse." });
    let charged = 0n;
    for (const [i, text] of ["Hello there", "And a follow-up question, a little longer than the first one", "Third"].entries()) {
      const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text, clientMessageId: `m${i}` }));
      expect(c.finished).toBeDefined();
      const holds = await holdsOf(c.started!.assistantMessageId);
      // One hold, placed early; it is what the client was told was held, and it settled to the actual charge.
      expect(holds).toEqual([{ amount: c.started!.creditsHeld, status: "committed", charged: c.finished!.creditsCharged, speculative: true }]);
      // The bound never asks the model for less than the exact prompt would have: the full budget.
      expect(c.started!.maxOutputTokens).toBe(256);
      const rec = sim.stats().recent.at(-1)!;
      // The hold covers the exact worst case (prompt as the model counted it + the full reply budget).
      expect(c.started!.creditsHeld).toBeGreaterThanOrEqual(BigInt(Math.ceil(((rec.promptTokens + 256) * 10) / 1000)));
      charged += c.finished!.creditsCharged;
    }
    expect(await held(u.id)).toBe(0n);
    expect(await platform.available(u.id)).toBe(10_000n - charged);
    await platform.assertInvariants();
  });

  it("places only the exact hold when turned off", async () => {
    const u = await platform.user(10_000n);
    const chat = exactOnly.client(u.token);
    const { conversation } = await chat.createConversation({ modelId: "m-fast", title: "t" });
    const c = await collect(chat.sendMessage({ conversationId: conversation!.id, text: "Hello", clientMessageId: "a" }));
    expect(await holdsOf(c.started!.assistantMessageId)).toEqual([
      { amount: c.started!.creditsHeld, status: "committed", charged: c.finished!.creditsCharged, speculative: false },
    ]);
    await platform.assertInvariants();
  });

  it("releases an early hold whose bound fell short (another replica added to the history) and places the exact one", async () => {
    const u = await platform.user(10_000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-fast", title: "t" });
    // The first message goes through another replica: this one still takes the history for empty.
    const first = await collect(other.client(u.token).sendMessage({ conversationId: conversation!.id, text: "A first message with some words in it", clientMessageId: "a" }));
    expect(first.finished).toBeDefined();
    const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Hi", clientMessageId: "b" }));
    expect(c.finished).toBeDefined();
    const holds = await holdsOf(c.started!.assistantMessageId);
    expect(holds).toHaveLength(2);
    expect(holds[0]).toMatchObject({ status: "released", charged: 0n, speculative: true });
    expect(holds[1]).toEqual({ amount: c.started!.creditsHeld, status: "committed", charged: c.finished!.creditsCharged, speculative: false });
    // The exact hold was sized for the real prompt, history included.
    const rec = sim.stats().recent.at(-1)!;
    expect(c.started!.creditsHeld).toBe(BigInt(Math.ceil(((rec.promptTokens + 256) * 10) / 1000)));
    expect(await held(u.id)).toBe(0n);
    expect(await platform.available(u.id)).toBe(10_000n - first.finished!.creditsCharged - c.finished!.creditsCharged);
    await platform.assertInvariants();
  });

  it("releases the early hold of a message refused after it was placed (no stream slot free)", async () => {
    const u = await platform.user(10_000n);
    const busy = await u.chat.createConversation({ modelId: "m-slow", title: "busy" });
    const fresh = await u.chat.createConversation({ modelId: "m-fast", title: "fresh" });
    let refused: ConnectError | undefined;
    let refusedHolds: HoldRow[] = [];
    let heldWhileRefused = -1n;
    const running = await collect(u.chat.sendMessage({ conversationId: busy.conversation!.id, text: "Count slowly", clientMessageId: "x" }), async (s) => {
      if (s.deltas.length !== 1) return;
      // The user's one stream slot is taken: a message to the fresh conversation is refused, after its early hold.
      refused = await collect(u.chat.sendMessage({ conversationId: fresh.conversation!.id, text: "Hi", clientMessageId: "y" }))
        .then(() => undefined, (e: unknown) => e as ConnectError);
      const got = await u.chat.getConversation({ conversationId: fresh.conversation!.id });
      expect(got.messages).toEqual([]);
      const r = await billingDb.query<{ reference: string }>(
        "SELECT reference FROM holds WHERE account_id = $1 AND idempotency_key <> reference", [u.id]);
      const refs = [...new Set(r.rows.map((x) => x.reference))].filter((ref) => ref !== s.started!.assistantMessageId);
      expect(refs).toHaveLength(1);
      refusedHolds = await holdsOf(refs[0]!);
      heldWhileRefused = await held(u.id);
    });
    expect(refused).toBeInstanceOf(ConnectError);
    expect(refused!.code).toBe(Code.ResourceExhausted);
    expect(refusedHolds).toMatchObject([{ status: "released", charged: 0n, speculative: true }]);
    // While the refusal was answered, only the running reply's credits were held.
    expect(heldWhileRefused).toBe(running.started!.creditsHeld);
    await waitFor(async () => (await held(u.id)) === 0n, "no credits held");
    await platform.assertInvariants();
  });
});
