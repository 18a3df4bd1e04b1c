// Integration: SendMessage end to end — real billing and model registry, Postgres, Redis, NATS, vLLM simulator.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBinary } from "@bufbuild/protobuf";
import { connect } from "@nats-io/transport-node";
import { Code, ConnectError } from "@connectrpc/connect";
import { countTokens, renderChatTemplate, startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { UsageRecordedSchema, type UsageRecorded } from "@luna/contracts/luna/events/v1/usage_events_pb.js";
import { MessageRole, MessageStatus } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { buildPrompt } from "../src/domain/prompt.js";
import { collect, startPlatform, waitFor, type Platform } from "./harness.js";

let platform: Platform;
let sim: VllmSim;

beforeAll(async () => {
  sim = await startVllmSim({ models: ["sim-model:4096"], outputTokens: { min: 30, max: 60 } });
  platform = await startPlatform({ chatEnv: { CHAT_TITLE_ENABLED: "true" } });
  await platform.addModel({ id: "m-basic", baseUrls: [sim.url], contextWindow: 4096, maxOutputTokens: 256 });
  // A tiny window to test truncation at its edge: 300 tokens, replies of at most 40.
  await platform.addModel({ id: "m-small", baseUrls: [sim.url], contextWindow: 300, maxOutputTokens: 40 });
});

afterAll(async () => {
  await platform?.stop();
  await sim?.close();
});

describe("SendMessage", () => {
  it("streams started, the deltas in order, then finished; stores both messages, charges the usage and emits usage.recorded", async () => {
    const nc = await connect({ servers: platform.natsUrl });
    const events: UsageRecorded[] = [];
    const sub = nc.subscribe("luna.events.usage.recorded", { callback: (_e, m) => void events.push(fromBinary(UsageRecordedSchema, m.data)) });
    try {
      const u = await platform.user(1000n);
      const { conversation } = await u.chat.createConversation({ modelId: "m-basic", systemPrompt: "You are terse." });
      const before = await platform.available(u.id);
      const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Hello there", clientMessageId: "c1" }));
      expect(c.order[0]).toBe("started");
      expect(c.order[c.order.length - 1]).toBe("finished");
      expect(c.order.filter((o) => o === "delta").length).toBeGreaterThan(3);
      expect(c.started!.replayed).toBe(false);
      expect(c.started!.modelId).toBe("m-basic");
      // Offsets are the running length of the text.
      let len = 0;
      for (const d of c.deltas) {
        len += d.text.length;
        expect(Number(d.offset)).toBe(len);
      }
      const f = c.finished!;
      const rec = sim.stats().recent.at(-1)!;
      expect(Number(f.promptTokens)).toBe(rec.promptTokens);
      expect(Number(f.completionTokens)).toBe(rec.completionTokens);
      // Our own count of the prompt (the simulator's template costs are configured exactly) is what the model saw.
      expect(rec.promptTokens).toBe(countTokens(renderChatTemplate([{ role: "system", content: "You are terse." }, { role: "user", content: "Hello there" }])));
      // 10 credits per 1k tokens in and out: ceil((p + c) * 10 / 1000).
      const cost = BigInt(Math.ceil(((rec.promptTokens + rec.completionTokens) * 10) / 1000));
      expect(f.creditsCharged).toBe(cost);
      expect(await platform.available(u.id)).toBe(before - cost);
      expect(f.balanceAfter).toBe(before - cost);

      const got = await u.chat.getConversation({ conversationId: conversation!.id });
      expect(got.messages.map((m) => [m.role, m.content, m.status])).toEqual([
        [MessageRole.USER, "Hello there", MessageStatus.COMPLETE],
        [MessageRole.ASSISTANT, c.text, MessageStatus.COMPLETE],
      ]);
      expect(got.messages[1]!.id).toBe(c.started!.assistantMessageId);
      expect(got.messages[1]!.parentId).toBe(c.started!.userMessageId);
      expect(got.messages[1]!.creditsCharged).toBe(cost);
      expect(got.conversation!.messageCount).toBe(2);
      expect(got.conversation!.lastMessagePreview).toBe(c.text.replace(/\s+/g, " ").trim().slice(0, 200));

      await waitFor(() => events.some((e) => e.reference === c.started!.assistantMessageId), "usage.recorded");
      const ev = events.find((e) => e.reference === c.started!.assistantMessageId)!;
      expect(ev).toMatchObject({ userId: u.id, modelId: "m-basic", feature: "chat", creditsCharged: cost, images: 0n });
      expect(Number(ev.promptTokens)).toBe(rec.promptTokens);
      expect(ev.meta?.subjectId).toBe(u.id);

      // The title is written in the background after the first reply.
      await waitFor(async () => (await u.chat.getConversation({ conversationId: conversation!.id })).conversation!.title !== "", "title");
      await platform.assertInvariants();
    } finally {
      sub.unsubscribe();
      await nc.close();
    }
  });

  it("sends the newest history that fits the window minus the reply budget, dropping whole old turns", async () => {
    const u = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-small", title: "window" });
    const id = conversation!.id;
    // Fill the history well past the window.
    for (let i = 0; i < 6; i++) {
      const c = await collect(u.chat.sendMessage({ conversationId: id, text: `Question number ${i} about the weather today`, clientMessageId: `w${i}` }));
      expect(c.finished).toBeDefined();
    }
    const last = await collect(u.chat.sendMessage({ conversationId: id, text: "And the final question", clientMessageId: "wlast" }));
    expect(last.finished).toBeDefined();
    const rec = sim.stats().recent.at(-1)!;

    // Recompute the expected prompt from the stored history with the simulator's own tokenizer.
    const { messages } = await u.chat.getConversation({ conversationId: id });
    const history = messages.slice(0, -1).map((m) => ({ role: m.role === MessageRole.USER ? "user" as const : "assistant" as const, content: m.content, tokens: countTokens(m.content) }));
    const expected = buildPrompt({ systemPrompt: "", systemTokens: 0, history, contextWindow: 300, maxOutputTokens: 40, minOutputTokens: 16, overhead: { perMessage: 5, perPrompt: 3 } });
    if (!expected.ok) throw new Error("unexpected");
    expect(expected.dropped).toBeGreaterThan(0);
    expect(expected.dropped % 2).toBe(0); // whole turns
    const sent = countTokens(renderChatTemplate(expected.messages.map((m) => ({ role: m.role, content: m.content }))));
    expect(rec.promptTokens).toBe(sent);
    expect(rec.promptTokens + 40).toBeLessThanOrEqual(300);
    // The next older turn would not have fitted.
    const older = history.slice(expected.dropped - 2, expected.dropped).reduce((n, m) => n + m.tokens + 5, 0);
    expect(rec.promptTokens + older + 40).toBeGreaterThan(300);
  });

  it("rejects a message too long for the window, storing nothing", async () => {
    const u = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-small" });
    const err = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "word ".repeat(400), clientMessageId: "long" })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toMatch(/^text: is too long for m-small/);
    const got = await u.chat.getConversation({ conversationId: conversation!.id });
    expect(got.messages).toEqual([]);
    expect(got.conversation!.messageCount).toBe(0);
    expect(await platform.available(u.id)).toBe(1000n);
    await platform.assertInvariants();
  });

  it("is idempotent per client message id: a retry streams the same reply with no second reserve or generation", async () => {
    const u = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-basic", title: "t" });
    const id = conversation!.id;
    const first = await collect(u.chat.sendMessage({ conversationId: id, text: "Tell me a story", clientMessageId: "same" }));
    const requests = sim.stats().requests.total;
    const available = await platform.available(u.id);
    const again = await collect(u.chat.sendMessage({ conversationId: id, text: "Tell me a story", clientMessageId: "same" }));
    expect(again.started!.replayed).toBe(true);
    expect(again.started!.assistantMessageId).toBe(first.started!.assistantMessageId);
    expect(again.started!.userMessageId).toBe(first.started!.userMessageId);
    expect(again.text).toBe(first.text);
    expect(again.finished!.creditsCharged).toBe(first.finished!.creditsCharged);
    expect(sim.stats().requests.total).toBe(requests);
    expect(await platform.available(u.id)).toBe(available);
    const history = await platform.billing.ledger.store.listHistory(u.id, 100);
    expect(history.filter((h) => h.kind === "charge")).toHaveLength(1);

    // The same id with another text is a client bug: rejected, nothing stored.
    const err = await collect(u.chat.sendMessage({ conversationId: id, text: "Another text", clientMessageId: "same" })).catch((e: unknown) => e);
    expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((await u.chat.getConversation({ conversationId: id })).messages).toHaveLength(2);
    await platform.assertInvariants();
  });

  it("serves concurrent duplicates from one generation and one hold", async () => {
    const u = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-basic", title: "t" });
    const requests = sim.stats().requests.total;
    const results = await Promise.allSettled(Array.from({ length: 4 }, () =>
      collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Race", clientMessageId: "race" }))));
    const ok = results.filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<typeof collect>>> => r.status === "fulfilled").map((r) => r.value);
    expect(ok.length).toBeGreaterThan(0);
    // Every request that got a stream got the same reply; the others were told a reply is in progress.
    for (const r of ok) expect(r.text).toBe(ok[0]!.text);
    for (const r of results) if (r.status === "rejected") expect((r.reason as ConnectError).code).toBe(Code.FailedPrecondition);
    expect(sim.stats().requests.total).toBe(requests + 1);
    const history = await platform.billing.ledger.store.listHistory(u.id, 100);
    expect(history.filter((h) => h.kind === "charge")).toHaveLength(1);
    expect((await u.chat.getConversation({ conversationId: conversation!.id })).messages).toHaveLength(2);
    await platform.assertInvariants();
  });

  it("refuses a second reply while one is streaming in the same conversation", async () => {
    const u = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-basic", title: "t" });
    sim.setFaults({ slowTokenMs: 20 });
    try {
      const first = u.chat.sendMessage({ conversationId: conversation!.id, text: "one", clientMessageId: "a" });
      const it = first[Symbol.asyncIterator]();
      await it.next(); // started
      const err = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "two", clientMessageId: "b" })).catch((e: unknown) => e);
      expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
      for (let r = await it.next(); !r.done; r = await it.next()) { /* drain */ }
    } finally {
      sim.setFaults({ slowTokenMs: 0 });
    }
    expect((await u.chat.getConversation({ conversationId: conversation!.id })).messages).toHaveLength(2);
    await platform.assertInvariants();
  });
});
