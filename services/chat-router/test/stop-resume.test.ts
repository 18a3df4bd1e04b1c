// Integration: stopping a reply (StopGeneration from any replica, client cancel), resuming it after a disconnect or
// from a second device on another replica, and regenerating — with the upstream aborted and the partial reply billed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, type ConnectError } from "@connectrpc/connect";
import { countTokens, startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { FinishReason, MessageStatus } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { collect, startPlatform, streamedBy, waitFor, type ChatReplica, type Platform } from "./harness.js";

let platform: Platform;
let sim: VllmSim;
/** A second replica that keeps a reply running for 5 s after its client went away. */
let patient: ChatReplica;
/** Watches the plain live subjects, to tell which path a test took. */
let watcher: NatsConnection;
const live: string[] = [];

beforeAll(async () => {
  // Long, slow replies: 100-120 tokens at ~120 tokens/s.
  sim = await startVllmSim({ models: ["sim-model:8192"], outputTokens: { min: 100, max: 120 }, faults: { slowTokenMs: 8 } });
  platform = await startPlatform();
  await platform.addModel({ id: "m-slow", baseUrls: [sim.url], contextWindow: 8192, maxOutputTokens: 512 });
  patient = await platform.startReplica({ CHAT_DISCONNECT_GRACE: "5s" });
  watcher = await connect({ servers: platform.natsUrl });
  watcher.subscribe("luna.live.chat.>", { callback: (_e, m) => void live.push(m.subject) });
});

afterAll(async () => {
  await watcher?.close();
  await platform?.stop();
  await sim?.close();
});

const costOf = (prompt: bigint, completion: bigint) => BigInt(Math.ceil(Number((prompt + completion) * 10n) / 1000));

async function message(chat: ReturnType<ChatReplica["client"]>, conversationId: string, id: string) {
  const got = await chat.getConversation({ conversationId });
  return got.messages.find((m) => m.id === id)!;
}

describe("StopGeneration", () => {
  for (const where of ["the same replica", "another replica"] as const) {
    it(`stops a reply from ${where}: the upstream is aborted, the partial reply kept and billed`, async () => {
      const u = await platform.user(1000n);
      const { conversation } = await u.chat.createConversation({ modelId: "m-slow", title: "t" });
      const aborted = sim.stats().requests.aborted;
      const stopper = where === "the same replica" ? u.chat : patient.client(u.token);
      let stopped: boolean | undefined;
      const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Count to a thousand", clientMessageId: "s" }), async (s) => {
        if (s.deltas.length === 3 && stopped === undefined) stopped = (await stopper.stopGeneration({ messageId: s.started!.assistantMessageId })).stopped;
      });
      expect(stopped).toBe(true);
      // From another replica the stop travels over NATS; on the streaming replica it is applied directly.
      await watcher.flush();
      expect(live.includes(`luna.live.chat.stop.${c.started!.assistantMessageId}`)).toBe(where === "another replica");
      expect(c.order.at(-1)).toBe("finished");
      expect(c.finished!.finishReason).toBe(FinishReason.CANCELLED);
      const completion = c.finished!.completionTokens;
      // Every token produced reached the client (deltas a reader is behind on are joined, so count the text's tokens).
      expect(Number(completion)).toBe(countTokens(c.text));
      expect(completion).toBeLessThan(100n);
      await waitFor(() => sim.stats().requests.aborted === aborted + 1, "the upstream request to be aborted");
      const cost = costOf(c.finished!.promptTokens, completion);
      expect(c.finished!.creditsCharged).toBe(cost);
      expect(await platform.available(u.id)).toBe(1000n - cost);
      const m = await message(u.chat, conversation!.id, c.started!.assistantMessageId);
      expect(m.status).toBe(MessageStatus.STOPPED);
      expect(m.content).toBe(c.text);
      // Stopping again: nothing left to stop.
      expect((await stopper.stopGeneration({ messageId: c.started!.assistantMessageId })).stopped).toBe(false);
      await platform.assertInvariants();
    });
  }

  it("stops a reply whose client cancelled its stream (no grace configured)", async () => {
    const u = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-slow", title: "t" });
    const aborted = sim.stats().requests.aborted;
    const ac = new AbortController();
    let assistantId = "";
    let seen = 0;
    await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Go on", clientMessageId: "c" }, { signal: ac.signal }), (s) => {
      assistantId = s.started!.assistantMessageId;
      seen = s.deltas.length;
      if (seen === 4) ac.abort();
    }).catch(() => undefined);
    await waitFor(async () => (await message(u.chat, conversation!.id, assistantId)).status === MessageStatus.STOPPED, "the reply to be stopped");
    await waitFor(() => sim.stats().requests.aborted === aborted + 1, "the upstream request to be aborted");
    const m = await message(u.chat, conversation!.id, assistantId);
    expect(m.completionTokens).toBeGreaterThanOrEqual(BigInt(seen));
    expect(m.creditsCharged).toBe(costOf(m.promptTokens, m.completionTokens));
    expect(await platform.available(u.id)).toBe(1000n - m.creditsCharged);
    await platform.assertInvariants();
  });

  it("answers NOT_FOUND for another user's reply and INVALID_ARGUMENT for a user message", async () => {
    const u = await platform.user(1000n);
    const other = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-slow", title: "t" });
    const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Hi", clientMessageId: "n", maxOutputTokens: 16 }));
    const e1 = await other.chat.stopGeneration({ messageId: c.started!.assistantMessageId }).catch((e: unknown) => e as ConnectError);
    expect((e1 as ConnectError).code).toBe(Code.NotFound);
    const e2 = await u.chat.stopGeneration({ messageId: c.started!.userMessageId }).catch((e: unknown) => e as ConnectError);
    expect((e2 as ConnectError).code).toBe(Code.InvalidArgument);
  });
});

describe("ResumeStream", () => {
  it("continues a reply after the client lost its connection, from where it was", async () => {
    const u = await platform.user(1000n);
    const phone = patient.client(u.token);
    const { conversation } = await phone.createConversation({ modelId: "m-slow", title: "t" });
    const ac = new AbortController();
    let first = { text: "", offset: 0n, id: "" };
    await collect(phone.sendMessage({ conversationId: conversation!.id, text: "Tell me everything", clientMessageId: "r" }, { signal: ac.signal }), (s) => {
      first = { text: s.text, offset: s.deltas.at(-1)?.offset ?? 0n, id: s.started!.assistantMessageId };
      if (s.deltas.length === 5) ac.abort();
    }).catch(() => undefined);
    // The phone comes back (same replica) a moment later and resumes from its last offset.
    await new Promise((r) => setTimeout(r, 100));
    const rest = await collect(phone.resumeStream({ messageId: first.id, offset: first.offset }));
    expect(rest.started!.replayed).toBe(true);
    expect(rest.started!.assistantMessageId).toBe(first.id);
    expect(rest.finished!.finishReason).not.toBe(FinishReason.CANCELLED);
    const m = await message(phone, conversation!.id, first.id);
    expect(m.status).toBe(MessageStatus.COMPLETE);
    expect(first.text + rest.text).toBe(m.content);
    expect(Number(rest.deltas.at(-1)!.offset)).toBe(m.content.length);
    await platform.assertInvariants();
  });

  it("follows a reply live from another replica (a second device), then gets its end", async () => {
    const u = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-slow", title: "t" });
    const laptop = patient.client(u.token);
    let second: Promise<Awaited<ReturnType<typeof collect>>> | undefined;
    const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Explain the universe", clientMessageId: "l" }), (s) => {
      if (s.deltas.length === 10 && !second) second = collect(laptop.resumeStream({ messageId: s.started!.assistantMessageId, offset: 0n }));
    });
    const other = await second!;
    // It followed the live subject (after a snapshot from the streaming replica), not the database's checkpoints.
    const id = c.started!.assistantMessageId;
    // Asked on the streaming replica's own subject (its id is on the reply's row), not a per-reply one.
    const owner = await streamedBy(platform, id);
    expect(owner).not.toBe("");
    expect(live.filter((s) => s === `luna.live.chat.snapshot.${owner}.${id}`).length).toBe(1);
    expect(live.filter((s) => s.startsWith("luna.live.chat.snapshot.")).length).toBe(1);
    expect(live.filter((s) => s === `luna.live.chat.${id}`).length).toBeGreaterThan(1);
    expect(other.text).toBe(c.text);
    expect(other.finished).toEqual(c.finished);
    // Offsets are consistent across replicas.
    expect(other.deltas.at(-1)!.offset).toBe(c.deltas.at(-1)!.offset);
    // And a finished reply resumes from the database, from any offset.
    const tail = await collect(laptop.resumeStream({ messageId: c.started!.assistantMessageId, offset: 20n }));
    expect(tail.text).toBe(c.text.slice(20));
    expect(tail.finished).toEqual(c.finished);
    // From its end: nothing more, then the end. Past its end: OUT_OF_RANGE, not an empty success.
    const end = BigInt(c.text.length);
    const none = await collect(u.chat.resumeStream({ messageId: c.started!.assistantMessageId, offset: end }));
    expect(none.deltas).toEqual([]);
    expect(none.finished).toEqual(c.finished);
    const past = await collect(u.chat.resumeStream({ messageId: c.started!.assistantMessageId, offset: end + 1n })).catch((e: unknown) => e as ConnectError);
    expect(past).toMatchObject({ code: Code.OutOfRange, rawMessage: `offset: ${end + 1n} is past the end of the reply (${end} UTF-16 code units)` });
  });

  it("answers OUT_OF_RANGE for an offset past a live reply's end, on its own replica and from another one", async () => {
    const u = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-slow", title: "t" });
    const laptop = patient.client(u.token);
    let here: Promise<unknown> | undefined;
    let there: Promise<unknown> | undefined;
    await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Explain the stars", clientMessageId: "o" }), (s) => {
      if (s.deltas.length === 5 && !here) {
        const req = { messageId: s.started!.assistantMessageId, offset: 1_000_000n };
        here = collect(u.chat.resumeStream(req)).catch((e: unknown) => e);
        there = collect(laptop.resumeStream(req)).catch((e: unknown) => e);
      }
    });
    expect(await here).toMatchObject({ code: Code.OutOfRange });
    expect(await there).toMatchObject({ code: Code.OutOfRange });
  });

  it("is private: another user's message is NOT_FOUND", async () => {
    const u = await platform.user(1000n);
    const other = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-slow", title: "t" });
    const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Hi", clientMessageId: "p", maxOutputTokens: 16 }));
    const err = await collect(other.chat.resumeStream({ messageId: c.started!.assistantMessageId, offset: 0n })).catch((e: unknown) => e as ConnectError);
    expect((err as ConnectError).code).toBe(Code.NotFound);
  });
});

describe("RegenerateMessage", () => {
  it("writes a new sibling reply from the same prompt; the old one stays, inactive", async () => {
    const u = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-slow", title: "t" });
    const id = conversation!.id;
    const a = await collect(u.chat.sendMessage({ conversationId: id, text: "Give me a name", clientMessageId: "g", maxOutputTokens: 20 }));
    const promptTokens = sim.stats().recent.at(-1)!.promptTokens;
    const b = await collect(u.chat.regenerateMessage({ messageId: a.started!.assistantMessageId, maxOutputTokens: 20 }));
    expect(b.started!.assistantMessageId).not.toBe(a.started!.assistantMessageId);
    expect(b.started!.userMessageId).toBe(a.started!.userMessageId);
    expect(b.finished).toBeDefined();
    // Streamed by the same replica: the regenerated reply's row names it too.
    expect(await streamedBy(platform, b.started!.assistantMessageId)).toBe(await streamedBy(platform, a.started!.assistantMessageId));
    expect(await streamedBy(platform, a.started!.assistantMessageId)).not.toBe("");
    // The same prompt: the replaced reply is not part of it.
    expect(sim.stats().recent.at(-1)!.promptTokens).toBe(promptTokens);
    const { messages } = await u.chat.getConversation({ conversationId: id });
    expect(messages.map((m) => [m.id, m.active])).toEqual([
      [a.started!.userMessageId, true],
      [a.started!.assistantMessageId, false],
      [b.started!.assistantMessageId, true],
    ]);
    expect(await platform.available(u.id)).toBe(1000n - a.finished!.creditsCharged - b.finished!.creditsCharged);

    // The next message continues from the new reply: its prompt holds exactly one reply.
    await collect(u.chat.sendMessage({ conversationId: id, text: "Another", clientMessageId: "g2", maxOutputTokens: 16 }));
    // Only the newest reply can be regenerated; a user message cannot.
    const e1 = await collect(u.chat.regenerateMessage({ messageId: b.started!.assistantMessageId })).catch((e: unknown) => e as ConnectError);
    expect((e1 as ConnectError).code).toBe(Code.FailedPrecondition);
    const e2 = await collect(u.chat.regenerateMessage({ messageId: a.started!.userMessageId })).catch((e: unknown) => e as ConnectError);
    expect((e2 as ConnectError).code).toBe(Code.InvalidArgument);
    await platform.assertInvariants();
  });
});
