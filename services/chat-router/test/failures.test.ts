// Integration: upstream failures — retry on another replica before the first token, circuit breaker with half-open
// probing, failures after the first token (partial reply kept, marked failed, billed for what was produced), hangs,
// and the sweeper finishing replies whose replica died.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import pg from "pg";
import { startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { FinishReason, MessageStatus } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { HoldStatus } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { UsageRecordedSchema, type UsageRecorded } from "@luna/contracts/luna/events/v1/usage_events_pb.js";
import { fromBinary } from "@bufbuild/protobuf";
import { USAGE_RECORDED_SUBJECT } from "../src/index.js";
import { collect, startPlatform, waitFor, type ChatReplica, type Platform } from "./harness.js";

let platform: Platform;
let simA: VllmSim;
let simB: VllmSim;
/** A chat-router replica with a short breaker cooldown and short timeouts, for the breaker and hang tests. */
let quick: ChatReplica;

beforeAll(async () => {
  simA = await startVllmSim({ models: ["sim-model:4096"], outputTokens: { min: 20, max: 30 } });
  simB = await startVllmSim({ models: ["sim-model:4096"], outputTokens: { min: 20, max: 30 } });
  platform = await startPlatform();
  await platform.addModel({ id: "m-two", baseUrls: [simA.url, simB.url], contextWindow: 4096, maxOutputTokens: 256 });
  await platform.addModel({ id: "m-one", baseUrls: [simA.url], contextWindow: 4096, maxOutputTokens: 256 });
  quick = await platform.startReplica({ CHAT_BREAKER_COOLDOWN: "400ms", CHAT_FIRST_TOKEN_TIMEOUT: "300ms", CHAT_IDLE_TIMEOUT: "300ms" });
});

beforeEach(() => {
  simA.reset();
  simB.reset();
  platform.chat.module.replicas.resetBreakers();
  quick.module.replicas.resetBreakers();
});

afterAll(async () => {
  await platform?.stop();
  await simA?.close();
  await simB?.close();
});

const costOf = (prompt: bigint, completion: bigint) => BigInt(Math.ceil(Number((prompt + completion) * 10n) / 1000));

describe("before the first token", () => {
  it("retries once on another replica, then opens the failing replica's breaker", async () => {
    const u = await platform.user(5000n);
    simA.setFaults({ errorRate: 1, errorStatus: 503 });
    const send = async (i: number) => {
      const { conversation } = await u.chat.createConversation({ modelId: "m-two", title: `c${i}` });
      return await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: `hello ${i}`, clientMessageId: "x" }));
    };
    // Conversations that prefer A fail there first and are retried on B, until 3 failures open A's breaker.
    let sent = 0;
    for (; simA.stats().faults.error < 3 && sent < 60; sent++) {
      const c = await send(sent);
      expect(c.finished, `reply ${sent}`).toBeDefined();
      expect(c.error).toBeUndefined();
    }
    expect(simA.stats().faults.error).toBe(3);
    expect(simB.stats().requests.completed).toBe(sent);
    expect(platform.chat.module.replicas.snapshot().find((r) => r.baseUrl === simA.url)!.state).toBe("open");
    // While it is open, A gets nothing.
    for (let i = 0; i < 8; i++) expect((await send(100 + i)).finished).toBeDefined();
    expect(simA.stats().requests.total).toBe(3);
    await platform.assertInvariants();
  });

  it("lets one probe through after the cooldown (half-open) and closes the breaker when it succeeds", async () => {
    const u = await platform.user(5000n);
    const chat = quick.client(u.token);
    simA.setFaults({ errorRate: 1, errorStatus: 500 });
    const send = async (i: number) => {
      const { conversation } = await chat.createConversation({ modelId: "m-two", title: `h${i}` });
      return await collect(chat.sendMessage({ conversationId: conversation!.id, text: `probe ${i}`, clientMessageId: "x" }));
    };
    for (let i = 0; simA.stats().faults.error < 3 && i < 60; i++) expect((await send(i)).finished).toBeDefined();
    const state = () => quick.module.replicas.snapshot().find((r) => r.baseUrl === simA.url)!.state;
    expect(state()).toBe("open");
    // After the cooldown one probe reaches A; it fails, so the breaker opens again (and the reply went to B).
    await waitFor(() => state() === "half-open", "half-open");
    for (let i = 0; simA.stats().faults.error < 4 && i < 60; i++) expect((await send(100 + i)).finished).toBeDefined();
    expect(simA.stats().faults.error).toBe(4);
    expect(state()).toBe("open");
    // A recovers; the next probe succeeds and closes the breaker.
    simA.setFaults({ errorRate: 0 });
    await waitFor(() => state() === "half-open", "half-open");
    for (let i = 0; state() !== "closed" && i < 60; i++) expect((await send(200 + i)).finished).toBeDefined();
    expect(state()).toBe("closed");
    expect(simA.stats().requests.completed).toBeGreaterThan(0);
    await platform.assertInvariants();
  });

  it("fails the reply with upstream_unavailable when no replica answers, releasing the hold", async () => {
    const u = await platform.user(1000n);
    simA.setFaults({ errorRate: 1 });
    const { conversation } = await u.chat.createConversation({ modelId: "m-one", title: "t" });
    const c = await collect(quick.client(u.token).sendMessage({ conversationId: conversation!.id, text: "anyone?", clientMessageId: "x" }));
    expect(c.order).toEqual(["started", "error"]);
    expect(c.error!.code).toBe("upstream_unavailable");
    expect(c.error!.creditsCharged).toBe(0n);
    expect(await platform.available(u.id)).toBe(1000n);
    const a = await platform.billing.ledger.store.getAccount(u.id);
    expect(a!.held).toBe(0n);
    const { messages } = await u.chat.getConversation({ conversationId: conversation!.id });
    expect(messages[1]!.status).toBe(MessageStatus.FAILED);
    expect(messages[1]!.errorCode).toBe("upstream_unavailable");
    await platform.assertInvariants();
  });

  it("times out a replica that never sends a first token and retries elsewhere", async () => {
    const u = await platform.user(1000n);
    simA.setFaults({ hangRate: 1, hangAfterTokens: 0 });
    simB.setFaults({ hangRate: 0 });
    const chat = quick.client(u.token);
    let hung = 0;
    for (let i = 0; hung === 0 && i < 40; i++) {
      const { conversation } = await chat.createConversation({ modelId: "m-two", title: `t${i}` });
      const c = await collect(chat.sendMessage({ conversationId: conversation!.id, text: `wait ${i}`, clientMessageId: "x" }));
      expect(c.finished).toBeDefined();
      hung = simA.stats().faults.hang;
    }
    expect(hung).toBe(1);
    // The hung request was abandoned (its slot freed upstream).
    await waitFor(() => simA.stats().requests.aborted === 1, "the hung request to be aborted");
    simA.setFaults({ hangRate: 0 });
    await platform.assertInvariants();
  });
});

describe("after the first token", () => {
  for (const fault of ["midStreamError", "disconnect", "hang"] as const) {
    it(`keeps the partial reply, marks it failed and bills what was produced (${fault})`, async () => {
      const u = await platform.user(1000n);
      if (fault === "midStreamError") simA.setFaults({ midStreamErrorRate: 1, midStreamErrorAfterTokens: 5 });
      if (fault === "disconnect") simA.setFaults({ disconnectRate: 1, disconnectAfterTokens: 5 });
      if (fault === "hang") simA.setFaults({ hangRate: 1, hangAfterTokens: 5 });
      try {
        const chat = quick.client(u.token);
        const { conversation } = await chat.createConversation({ modelId: "m-one", title: "t" });
        const c = await collect(chat.sendMessage({ conversationId: conversation!.id, text: "go", clientMessageId: "x" }));
        expect(c.order.slice(0, 1)).toEqual(["started"]);
        expect(c.order.at(-1), `${c.error?.code}: ${c.error?.message}`).toBe("error");
        // Deltas a reader is behind on are joined, so count tokens by the reported completion tokens.
        expect(c.deltas.length).toBeGreaterThan(0);
        expect(c.error!.code).toBe(fault === "hang" ? "upstream_timeout" : "upstream_error");
        expect(c.error!.completionTokens).toBe(5n);
        const cost = costOf(c.error!.promptTokens, 5n);
        expect(cost).toBeGreaterThan(0n);
        expect(c.error!.creditsCharged).toBe(cost);
        expect(await platform.available(u.id)).toBe(1000n - cost);
        // Not retried: the user already saw part of the reply.
        expect(simA.stats().requests.total).toBe(1);
        const { messages } = await chat.getConversation({ conversationId: conversation!.id });
        expect(messages[1]).toMatchObject({ status: MessageStatus.FAILED, content: c.text, finishReason: FinishReason.ERROR, creditsCharged: cost });
        await platform.assertInvariants();
      } finally {
        simA.setFaults({ midStreamErrorRate: 0, disconnectRate: 0, hangRate: 0 });
      }
    });
  }
});

describe("sweeper", () => {
  it("finishes a reply whose replica died: bills its last checkpoint, marks it interrupted", async () => {
    const u = await platform.user(1000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-one", title: "t" });
    // A reply as a crashed replica leaves it: streaming, a checkpoint of 7 tokens, an open hold, no heartbeat.
    const hold = await platform.billing.ledger.reserve({ accountId: u.id, amount: 40n, reason: "chat", reference: "orphan", idempotencyKey: "orphan", ttlMs: 600_000 });
    const db = new pg.Client({ connectionString: platform.dbs.chat.url });
    await db.connect();
    const userMsg = "6f9619ff-8b86-4011-b42d-00c04fc964f1";
    const replyMsg = "6f9619ff-8b86-4011-b42d-00c04fc964f2";
    try {
      await db.query(`INSERT INTO messages (id, conversation_id, role, content, status) VALUES ($1, $2, 'user', 'q', 'complete')`, [userMsg, conversation!.id]);
      await db.query(
        `INSERT INTO messages (id, conversation_id, role, content, status, parent_id, model_id, prompt_tokens, completion_tokens, credits_held,
           available_after_reserve, hold_id, updated_at)
         VALUES ($1, $2, 'assistant', 'partial answer', 'streaming', $3, 'm-one', 20, 7, 40, $4, $5, now() - interval '10 minutes')`,
        [replyMsg, conversation!.id, userMsg, hold.result.available.toString(), hold.result.holdId],
      );
    } finally {
      await db.end();
    }
    const events: UsageRecorded[] = [];
    const sub = platform.chat.nats.subscribe(USAGE_RECORDED_SUBJECT, { callback: (_e, m) => void events.push(fromBinary(UsageRecordedSchema, m.data)) });
    expect(await platform.chat.module.sweep()).toBe(1);
    // Its usage event is written with the final state (one statement) and relayed from the outbox.
    await waitFor(() => events.some((e) => e.reference === replyMsg), "usage.recorded of the swept reply");
    sub.unsubscribe();
    expect(events.find((e) => e.reference === replyMsg)).toMatchObject({ userId: u.id, modelId: "m-one", feature: "chat", creditsCharged: 1n, promptTokens: 20n, completionTokens: 7n });
    const { messages } = await u.chat.getConversation({ conversationId: conversation!.id });
    const reply = messages.find((m) => m.id === replyMsg)!;
    expect(reply).toMatchObject({ status: MessageStatus.FAILED, errorCode: "interrupted", content: "partial answer", creditsCharged: 1n });
    const h = await platform.billing.ledger.store.getHold(hold.result.holdId);
    expect(h!.status).toBe("committed");
    expect(h!.charged).toBe(1n); // ceil((20 + 7) * 10 / 1000)
    // Nothing left to sweep.
    expect(await platform.chat.module.sweep()).toBe(0);
    expect(HoldStatus.COMMITTED).toBeDefined();
    await platform.assertInvariants();
  });
});
