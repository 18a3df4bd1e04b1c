// Integration: EditMessage — the newest user message is replaced by a new version (a sibling: the old version and its
// replies stay, inactive), the reply streams as SendMessage's does (hold first, actual usage charged, stop/resume),
// the model sees only the new version, a retry replays, and every refusal leaves the conversation as it was.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { countTokens, renderChatTemplate, startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { FinishReason } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { collect, startPlatform, streamedBy, type Platform } from "./harness.js";

let platform: Platform;
let sim: VllmSim;

beforeAll(async () => {
  sim = await startVllmSim({ models: ["sim-model:8192"], outputTokens: { min: 20, max: 30 } });
  platform = await startPlatform({ chatEnv: { CHAT_MIN_REPLY_TOKENS: "16", CHAT_MAX_MESSAGE_CHARS: "500" } });
  // 10 credits per 1k input tokens, 1 credit per output token: the charge tells prompt and reply apart.
  await platform.addModel({ id: "m-edit", baseUrls: [sim.url], contextWindow: 8192, maxOutputTokens: 512, inputPer1k: 10n, outputPer1k: 1000n });
});

afterAll(async () => {
  await platform?.stop();
  await sim?.close();
});

const costOf = (prompt: number, completion: number) => BigInt(Math.ceil((prompt * 10 + completion * 1000) / 1000));
/** The simulator's exact prompt size for a history (its ChatML template). */
const promptOf = (messages: Array<{ role: string; content: string }>) => countTokens(renderChatTemplate(messages));

async function rejected(p: Promise<unknown>): Promise<ConnectError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ConnectError);
  return err as ConnectError;
}

/** A user with one conversation holding a first exchange. */
async function withExchange(credits = 5000n) {
  const u = await platform.user(credits);
  const { conversation } = await u.chat.createConversation({ modelId: "m-edit", title: "t" });
  const id = conversation!.id;
  const first = await collect(u.chat.sendMessage({ conversationId: id, text: "Name a colour", clientMessageId: "c1", maxOutputTokens: 20 }));
  expect(first.finished).toBeDefined();
  return { u, id, first };
}

describe("EditMessage", () => {
  it("adds the edited text as a sibling version, streams its reply from a prompt without the old version, and bills it", async () => {
    const { u, id, first } = await withExchange();
    const oldUser = first.started!.userMessageId;
    const edited = await collect(u.chat.editMessage({ messageId: oldUser, text: "Name a fruit", clientMessageId: "c1-edit", maxOutputTokens: 20 }),
      async (s) => {
        if (s.order.length === 1) {
          // Held before the model answers: the worst case of this prompt and 20 reply tokens.
          expect((await platform.billing.ledger.store.getAccount(u.id))!.held).toBe(s.started!.creditsHeld);
        }
      });
    expect(edited.started!.replayed).toBe(false);
    expect(edited.started!.userMessageId).not.toBe(oldUser);
    expect(edited.finished!.finishReason).not.toBe(FinishReason.ERROR);
    // Its row names the replica that streams it (followers on other replicas ask that one): the same as SendMessage's.
    expect(await streamedBy(platform, edited.started!.assistantMessageId)).toBe(await streamedBy(platform, first.started!.assistantMessageId));
    expect(await streamedBy(platform, edited.started!.userMessageId)).toBe("");
    // The model saw only the new version: the old message and its reply are not in the prompt.
    const rec = sim.stats().recent.at(-1)!;
    expect(rec.promptTokens).toBe(promptOf([{ role: "user", content: "Name a fruit" }]));
    expect(Number(edited.finished!.promptTokens)).toBe(rec.promptTokens);
    expect(edited.finished!.creditsCharged).toBe(costOf(rec.promptTokens, rec.completionTokens));
    expect(edited.started!.creditsHeld).toBeGreaterThanOrEqual(edited.finished!.creditsCharged);
    const account = (await platform.billing.ledger.store.getAccount(u.id))!;
    expect(account.held).toBe(0n);
    expect(account.balance).toBe(5000n - first.finished!.creditsCharged - edited.finished!.creditsCharged);

    // Both versions are in the conversation: the old one (and its reply) inactive, the new one pointing at it.
    const got = await u.chat.getConversation({ conversationId: id });
    expect(got.messages.map((m) => [m.id, m.parentId, m.active, m.content])).toEqual([
      [oldUser, "", false, "Name a colour"],
      [first.started!.assistantMessageId, oldUser, false, first.text],
      [edited.started!.userMessageId, oldUser, true, "Name a fruit"],
      [edited.started!.assistantMessageId, edited.started!.userMessageId, true, edited.text],
    ]);
    expect(got.conversation!.messageCount).toBe(4);
    expect(got.conversation!.lastMessagePreview).toBe(edited.text.replace(/\s+/g, " ").trim().slice(0, 200));

    // A third version shares the first version's id as parent; the next message continues from it alone.
    const third = await collect(u.chat.editMessage({ messageId: edited.started!.userMessageId, text: "Name a tree", clientMessageId: "c1-edit2", maxOutputTokens: 20 }));
    const next = await collect(u.chat.sendMessage({ conversationId: id, text: "Why?", clientMessageId: "c2", maxOutputTokens: 16 }));
    expect(next.finished).toBeDefined();
    expect(sim.stats().recent.at(-1)!.promptTokens).toBe(promptOf([
      { role: "user", content: "Name a tree" }, { role: "assistant", content: third.text }, { role: "user", content: "Why?" },
    ]));
    const after = await u.chat.getConversation({ conversationId: id });
    const users = after.messages.filter((m) => m.content.startsWith("Name a"));
    expect(users.map((m) => [m.parentId, m.active])).toEqual([["", false], [oldUser, false], [oldUser, true]]);
    // Only the newest user message can be edited: the version a later message followed is no longer it.
    const stale = await rejected(collect(u.chat.editMessage({ messageId: third.started!.userMessageId, text: "x", clientMessageId: "c-late" })));
    expect(stale.code).toBe(Code.FailedPrecondition);
    expect(stale.rawMessage).toMatch(/newest user message/);
    await platform.assertInvariants();
  });

  it("replays the reply for a retry with the same client message id (nothing new held or charged)", async () => {
    const { u, first } = await withExchange();
    const req = { messageId: first.started!.userMessageId, text: "Name a river", clientMessageId: "retry-1", maxOutputTokens: 20 };
    const a = await collect(u.chat.editMessage(req));
    const requests = sim.stats().requests.total;
    const available = await platform.available(u.id);
    const b = await collect(u.chat.editMessage(req));
    expect(b.started!.replayed).toBe(true);
    expect(b.started!.assistantMessageId).toBe(a.started!.assistantMessageId);
    expect(b.text).toBe(a.text);
    expect(b.finished!.creditsCharged).toBe(a.finished!.creditsCharged);
    expect(sim.stats().requests.total).toBe(requests);
    expect(await platform.available(u.id)).toBe(available);
    // The same id with other text is a different message: refused.
    const other = await rejected(collect(u.chat.editMessage({ ...req, text: "Name a lake" })));
    expect(other.code).toBe(Code.FailedPrecondition);
    await platform.assertInvariants();
  });

  it("refuses bad requests with clear codes and leaves the conversation as it was", async () => {
    const { u, id, first } = await withExchange();
    const userId = first.started!.userMessageId;
    const before = await u.chat.getConversation({ conversationId: id });
    const cases: Array<[string, Code, RegExp, () => Promise<unknown>]> = [
      ["empty text", Code.InvalidArgument, /text: must not be empty/, () => collect(u.chat.editMessage({ messageId: userId, text: "  \n", clientMessageId: "e1" }))],
      ["too long", Code.InvalidArgument, /text: must be at most 500 characters/, () => collect(u.chat.editMessage({ messageId: userId, text: "x".repeat(501), clientMessageId: "e2" }))],
      ["no client id", Code.InvalidArgument, /client_message_id: is required/, () => collect(u.chat.editMessage({ messageId: userId, text: "ok" }))],
      ["bad id", Code.InvalidArgument, /message_id: must be a UUID/, () => collect(u.chat.editMessage({ messageId: "nope", text: "ok", clientMessageId: "e3" }))],
      ["a reply", Code.InvalidArgument, /message_id: must be a user message/,
        () => collect(u.chat.editMessage({ messageId: first.started!.assistantMessageId, text: "ok", clientMessageId: "e4" }))],
      ["negative max", Code.InvalidArgument, /max_output_tokens/, () => collect(u.chat.editMessage({ messageId: userId, text: "ok", clientMessageId: "e5", maxOutputTokens: -1 }))],
    ];
    for (const [what, code, message, call] of cases) {
      const err = await rejected(call());
      expect(err.code, what).toBe(code);
      expect(err.rawMessage, what).toMatch(message);
    }
    // Another user's message reads as absent (the rule for every id of another user).
    const intruder = await platform.user(1000n);
    const notMine = await rejected(collect(intruder.chat.editMessage({ messageId: userId, text: "mine now", clientMessageId: "e6" })));
    expect(notMine.code).toBe(Code.NotFound);
    // The first version of a message is not the newest once it was edited, even though nothing followed it.
    const v2 = await collect(u.chat.editMessage({ messageId: userId, text: "Name a bird", clientMessageId: "e7", maxOutputTokens: 16 }));
    const old = await rejected(collect(u.chat.editMessage({ messageId: userId, text: "Name a fish", clientMessageId: "e8" })));
    expect(old.code).toBe(Code.FailedPrecondition);
    const after = await u.chat.getConversation({ conversationId: id });
    expect(after.messages.length).toBe(before.messages.length + 2);
    expect(after.messages.at(-2)!.id).toBe(v2.started!.userMessageId);
    await platform.assertInvariants();
  });

  it("refuses while a reply is streaming; stop and resume work on an edited reply, billed for what it produced", async () => {
    const { u, id, first } = await withExchange();
    sim.setFaults({ slowTokenMs: 30 });
    try {
      const edit = u.chat.editMessage({ messageId: first.started!.userMessageId, text: "Count slowly", clientMessageId: "s1", maxOutputTokens: 200 });
      let busy: ConnectError | undefined;
      let resumed: Promise<Awaited<ReturnType<typeof collect>>> | undefined;
      const c = await collect(edit, async (s) => {
        if (s.deltas.length === 2 && !busy) {
          // A second edit of the (now old) version, or of the new one while its reply streams: both refused.
          busy = await rejected(collect(u.chat.editMessage({ messageId: s.started!.userMessageId, text: "Other", clientMessageId: "s2" })));
          resumed = collect(u.chat.resumeStream({ messageId: s.started!.assistantMessageId, offset: s.deltas[0]!.offset }));
          expect((await u.chat.stopGeneration({ messageId: s.started!.assistantMessageId })).stopped).toBe(true);
        }
      });
      expect(busy!.code).toBe(Code.FailedPrecondition);
      expect(busy!.rawMessage).toMatch(/still being generated/);
      expect(c.finished!.finishReason).toBe(FinishReason.CANCELLED);
      const r = await resumed!;
      expect(c.deltas[0]!.text + r.text).toBe(c.text);
      expect(r.finished!.creditsCharged).toBe(c.finished!.creditsCharged);
      const rec = sim.stats().recent.at(-1)!;
      expect(rec.finishReason).toBe("abort");
      expect(c.finished!.creditsCharged).toBe(costOf(rec.promptTokens, Number(c.finished!.completionTokens)));
      expect(Number(c.finished!.completionTokens)).toBe(countTokens(c.text));
    } finally {
      sim.setFaults({ slowTokenMs: 0 });
    }
    const got = await u.chat.getConversation({ conversationId: id });
    expect(got.messages.map((m) => m.active)).toEqual([false, false, true, true]);
    const account = (await platform.billing.ledger.store.getAccount(u.id))!;
    expect(account.held).toBe(0n);
    await platform.assertInvariants();
  });

  it("refuses with RESOURCE_EXHAUSTED when the credits do not cover a minimal reply, and restores the old version", async () => {
    const u = await platform.user(30n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-edit", title: "t" });
    const id = conversation!.id;
    const first = await collect(u.chat.sendMessage({ conversationId: id, text: "Hi", clientMessageId: "r1", maxOutputTokens: 20 }));
    const left = await platform.available(u.id);
    expect(left).toBeLessThan(16n);
    const before = await u.chat.getConversation({ conversationId: id });
    const requests = sim.stats().requests.total;
    const err = await rejected(collect(u.chat.editMessage({ messageId: first.started!.userMessageId, text: "Hello", clientMessageId: "r2" })));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toMatch(/^not enough credits: .* \d+ available$/);
    expect(sim.stats().requests.total).toBe(requests);
    const after = await u.chat.getConversation({ conversationId: id });
    expect(after.messages).toEqual(before.messages);
    expect(after.conversation!.messageCount).toBe(before.conversation!.messageCount);
    expect(after.conversation!.lastMessagePreview).toBe(before.conversation!.lastMessagePreview);
    expect(await platform.available(u.id)).toBe(left);
    // The old version is still the newest user message: after a top-up the edit works, with the same id.
    await platform.billing.ledger.grant({ accountId: u.id, amount: 1000n, reason: "top-up", idempotencyKey: `top-up-${u.id}` });
    const ok = await collect(u.chat.editMessage({ messageId: first.started!.userMessageId, text: "Hello", clientMessageId: "r2", maxOutputTokens: 16 }));
    expect(ok.started!.replayed).toBe(false);
    expect(ok.finished).toBeDefined();
    await platform.assertInvariants();
  });
});
