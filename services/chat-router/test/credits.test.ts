// Integration: credits and limits — the reply is clamped to what the user can afford, refused when not even a
// minimal reply is, and the per-user rate and concurrent-stream limits hold (one Admit call; the slot is freed by
// the hold's commit/release, ReleaseLease only without a hold); the ledger stays consistent.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { FinishReason } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { collect, startPlatform, type Platform } from "./harness.js";

let platform: Platform;
let sim: VllmSim;
/** Every in-process call chat-router makes (`<service>/<method>`), in order. */
const calls: string[] = [];
const limitsCalls = (from: number) => calls.slice(from).filter((c) => c.startsWith("luna.billing.v1.LimitsService/")).map((c) => c.split("/")[1]);

beforeAll(async () => {
  sim = await startVllmSim({ models: ["sim-model:8192"], outputTokens: { min: 200, max: 300 } });
  platform = await startPlatform({ limits: { chatPerMinute: 3, chatStreams: 1 }, chatEnv: { CHAT_MIN_REPLY_TOKENS: "16" }, onCall: (c) => calls.push(c) });
  // Output is expensive: 1 credit per token; input 10 credits per 1k.
  await platform.addModel({ id: "m-pricey", baseUrls: [sim.url], contextWindow: 8192, maxOutputTokens: 1024, inputPer1k: 10n, outputPer1k: 1000n });
  await platform.addModel({ id: "m-free", baseUrls: [sim.url], contextWindow: 8192, maxOutputTokens: 1024, inputPer1k: 0n, outputPer1k: 0n });
});

afterAll(async () => {
  await platform?.stop();
  await sim?.close();
});

async function rejected(p: Promise<unknown>): Promise<ConnectError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ConnectError);
  return err as ConnectError;
}

describe("credits", () => {
  it("clamps max_tokens to what the user can afford and bills the actual reply", async () => {
    const u = await platform.user(50n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-pricey", title: "t" });
    const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Write a long essay", clientMessageId: "x" }));
    // The clamp keeps the worst case (prompt + reply) within the 50 credits.
    const max = c.started!.maxOutputTokens;
    expect(max).toBeGreaterThanOrEqual(16);
    expect(max).toBeLessThan(50);
    expect(c.started!.creditsHeld).toBeLessThanOrEqual(50n);
    const rec = sim.stats().recent.at(-1)!;
    expect(rec.completionTokens).toBe(max);
    expect(c.finished!.finishReason).toBe(FinishReason.LENGTH);
    const cost = BigInt(Math.ceil((rec.promptTokens * 10 + rec.completionTokens * 1000) / 1000));
    expect(c.finished!.creditsCharged).toBe(cost);
    expect(await platform.available(u.id)).toBe(50n - cost);
    await platform.assertInvariants();
  });

  it("refuses with RESOURCE_EXHAUSTED and the balance when not even a minimal reply is affordable, storing nothing", async () => {
    const u = await platform.user(10n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-pricey", title: "t" });
    const requests = sim.stats().requests.total;
    const err = await rejected(collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Hi", clientMessageId: "y" })));
    expect(err.code).toBe(Code.ResourceExhausted);
    // One statement of the need and the balance, in the kit's wording (not billing's message appended to ours).
    expect(err.rawMessage).toMatch(/^not enough credits: a reply \(\d+ prompt tokens and at least \d+ reply tokens\) needs \d+ credits?, 10 available$/);
    expect(sim.stats().requests.total).toBe(requests);
    const got = await u.chat.getConversation({ conversationId: conversation!.id });
    expect(got.messages).toEqual([]);
    expect(got.conversation!.messageCount).toBe(0);
    expect(got.conversation!.lastMessagePreview).toBe("");
    expect(await platform.available(u.id)).toBe(10n);
    // After a top-up the same client message id works (the refused attempt left nothing behind).
    await platform.billing.ledger.grant({ accountId: u.id, amount: 100n, reason: "top-up", idempotencyKey: "top-up" });
    const ok = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Hi", clientMessageId: "y" }));
    expect(ok.finished).toBeDefined();
    expect(ok.started!.replayed).toBe(false);
    await platform.assertInvariants();
  });

  it("holds the worst case while streaming and settles to the actual charge", async () => {
    const u = await platform.user(2000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-pricey", title: "t" });
    const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Hello", clientMessageId: "z", maxOutputTokens: 500 }),
      async (s) => {
        if (s.order.length === 2) {
          // While streaming, the hold is the worst case: prompt + 500 output tokens.
          const a = await platform.billing.ledger.store.getAccount(u.id);
          expect(a!.held).toBe(s.started!.creditsHeld);
        }
      });
    expect(c.started!.maxOutputTokens).toBe(500);
    const a = await platform.billing.ledger.store.getAccount(u.id);
    expect(a!.held).toBe(0n);
    expect(a!.balance).toBe(2000n - c.finished!.creditsCharged);
    await platform.assertInvariants();
  });
});

describe("limits", () => {
  /**
   * A user whose first reply (conversation a) is streaming, slowed, while a message to conversation b is sent: that
   * one must be refused by the one-stream limit. Returns once the first reply has ended.
   */
  async function refusedWhileStreaming() {
    const u = await platform.user(5000n);
    const a = await u.chat.createConversation({ modelId: "m-pricey", title: "a" });
    const b = await u.chat.createConversation({ modelId: "m-pricey", title: "b" });
    sim.setFaults({ slowTokenMs: 5 });
    try {
      const first = u.chat.sendMessage({ conversationId: a.conversation!.id, text: "one", clientMessageId: "1", maxOutputTokens: 40 })[Symbol.asyncIterator]();
      await first.next();
      const err = await rejected(collect(u.chat.sendMessage({ conversationId: b.conversation!.id, text: "two", clientMessageId: "2" })));
      expect(err.code).toBe(Code.ResourceExhausted);
      expect(err.rawMessage).toBe("too many replies in progress: at most 1 at a time");
      for (let r = await first.next(); !r.done; r = await first.next()) { /* drain */ }
    } finally {
      sim.setFaults({ slowTokenMs: 0 });
    }
    return { u, b };
  }

  it("allows one stream at a time per user (concurrent-stream lease), released at the end", async () => {
    const { u, b } = await refusedWhileStreaming();
    // The slot was released with the reply: the next one goes through (the rejected attempt stored nothing).
    const ok = await collect(u.chat.sendMessage({ conversationId: b.conversation!.id, text: "two", clientMessageId: "2", maxOutputTokens: 20 }));
    expect(ok.finished).toBeDefined();
    await platform.assertInvariants();
  });

  it("a request refused for the concurrent-stream limit spends nothing of the per-minute budget (README: limits)", async () => {
    const { u, b } = await refusedWhileStreaming();
    // One of the three requests a minute is spent (the one served; the refused one consumed nothing): two more are
    // served, then the limit.
    for (const n of ["2", "3"]) {
      expect((await collect(u.chat.sendMessage({ conversationId: b.conversation!.id, text: n, clientMessageId: n, maxOutputTokens: 16 }))).finished).toBeDefined();
    }
    const err = await rejected(collect(u.chat.sendMessage({ conversationId: b.conversation!.id, text: "four", clientMessageId: "4", maxOutputTokens: 16 })));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toMatch(/^rate limit: at most 3 chat requests per minute; retry in \d+s$/);
    await platform.assertInvariants();
  });

  it("admits with one LimitsService call; the slot is freed by the commit or release of the hold, with no ReleaseLease", async () => {
    const u = await platform.user(5000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-pricey", title: "one call" });
    const from = calls.length;
    // A reply that is charged (Commit) ...
    const c1 = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "one", clientMessageId: "1", maxOutputTokens: 16 }));
    expect(c1.finished!.creditsCharged).toBeGreaterThan(0n);
    // ... and one that produced nothing (Release): stopped before its first token, billed nothing.
    sim.setFaults({ slowTokenMs: 2000 });
    try {
      let stopped: Promise<unknown> | undefined;
      const c2 = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "two", clientMessageId: "2", maxOutputTokens: 16 }), (s) => {
        if (s.started && !stopped) stopped = u.chat.stopGeneration({ messageId: s.started.assistantMessageId });
      });
      await stopped;
      expect(c2.finished).toMatchObject({ finishReason: FinishReason.CANCELLED, creditsCharged: 0n });
    } finally {
      sim.setFaults({ slowTokenMs: 0 });
    }
    expect(limitsCalls(from)).toEqual(["Admit", "Admit"]);
    expect(calls.slice(from).filter((c) => /CreditsService\/(Commit|Release)$/.test(c)).map((c) => c.split("/")[1])).toEqual(["Commit", "Release"]);
    // The one slot was free again each time: a third message goes through at once (the user has 1 stream, 3 a minute).
    expect((await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "three", clientMessageId: "3", maxOutputTokens: 16 }))).finished).toBeDefined();
    await platform.assertInvariants();
  });

  it("a free model's reply (no hold to settle) frees its slot with ReleaseLease", async () => {
    const u = await platform.user(0n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-free", title: "free" });
    const from = calls.length;
    for (const n of ["1", "2"]) {
      const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: n, clientMessageId: n, maxOutputTokens: 16 }));
      expect(c.finished!.creditsCharged).toBe(0n);
    }
    expect(limitsCalls(from)).toEqual(["Admit", "ReleaseLease", "Admit", "ReleaseLease"]);
    expect(calls.slice(from).filter((c) => c.includes("CreditsService"))).toEqual([]);
  });

  it("rate-limits chat requests per user per minute", async () => {
    const u = await platform.user(5000n);
    const other = await platform.user(5000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-pricey", title: "r" });
    for (let i = 0; i < 3; i++) {
      const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: `m${i}`, clientMessageId: `r${i}`, maxOutputTokens: 16 }));
      expect(c.finished).toBeDefined();
    }
    const err = await rejected(collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "m3", clientMessageId: "r3", maxOutputTokens: 16 })));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toMatch(/^rate limit: at most 3 chat requests per minute; retry in \d+s$/);
    expect((await u.chat.getConversation({ conversationId: conversation!.id })).messages).toHaveLength(6);
    // Another user is not affected.
    const o = await other.chat.createConversation({ modelId: "m-pricey", title: "o" });
    expect((await collect(other.chat.sendMessage({ conversationId: o.conversation!.id, text: "hi", clientMessageId: "o", maxOutputTokens: 16 }))).finished).toBeDefined();
    await platform.assertInvariants();
  });
});
