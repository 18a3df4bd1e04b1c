// Issue 23, lever 2: a reply's hold is recorded on its row by the reply run's FIRST write after the reserve — a
// checkpoint, a heartbeat (waiting for a model to wake up) or the final state — not by a statement of its own.
// Real Postgres, NATS, Redis, billing and model-registry; vLLM simulators. The statements chat-router sends are
// seen by a spy on node-postgres's Pool.query (the store names every hot-path statement), and the rows are read back
// from Postgres. The crash window before the first write is covered by hold-crash.test.ts (the sweeper settles the
// hold by its reference).
import { startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { ModelKind, ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { collect, startPlatform, waitFor, type ChatReplica, type Collected, type Platform } from "./harness.js";

let platform: Platform;
/** A replica that checkpoints every 200 ms (the platform's own replica checkpoints every 60 s: short replies write once). */
let fast: ChatReplica;
let sim: VllmSim;
let broken: VllmSim;
let asleep: VllmSim;
let db: pg.Client;
const query = vi.spyOn(pg.Pool.prototype, "query");

beforeAll(async () => {
  sim = await startVllmSim({ models: ["sim-model:4096"], outputTokens: { min: 8, max: 16 } });
  broken = await startVllmSim({ models: ["sim-model:4096"], faults: { errorRate: 1 } });
  asleep = await startVllmSim({ models: ["sim-model:4096"], coldStartMs: 600_000 });
  platform = await startPlatform({ chatEnv: { CHAT_CHECKPOINT_INTERVAL: "60s" }, registryEnv: { REGISTRY_HEALTH_INTERVAL: "30s" } });
  fast = await platform.startReplica({ CHAT_CHECKPOINT_INTERVAL: "200ms", CHAT_WAKE_PROBE_INTERVAL: "100ms" });
  await platform.addModel({ id: "m-rec", baseUrls: [sim.url], contextWindow: 4096, maxOutputTokens: 256, inputPer1k: 10n, outputPer1k: 100n });
  await platform.addModel({ id: "m-broken", baseUrls: [broken.url], contextWindow: 4096, maxOutputTokens: 256, inputPer1k: 10n, outputPer1k: 100n });
  await platform.admin.upsertModel({
    model: {
      id: "m-asleep", displayName: "m-asleep", description: "", kind: ModelKind.TEXT, tags: [], contextWindow: 4096, maxOutputTokens: 256,
      prices: { inputPer1kTokens: 10n, outputPer1kTokens: 100n, perImage: 0n }, sortOrder: 0,
      upstream: { baseUrls: [asleep.url], resolveUrl: "", apiKeyEnv: "", servedModelName: "sim-model" },
      scaleToZero: true, coldStartSeconds: 600,
    },
  });
  await waitFor(() => [platform.chat, fast].every((r) => r.module.catalog.getModel("m-rec") && r.module.catalog.getModel("m-broken")
    && r.module.catalog.getModel("m-asleep")?.status === ModelStatus.STANDBY), "the replicas see the models", 20_000);
  db = new pg.Client({ connectionString: platform.dbs.chat.url });
  await db.connect();
}, 90_000);

afterAll(async () => {
  query.mockRestore();
  await db?.end();
  await platform?.stop();
  await Promise.all([sim?.close(), broken?.close(), asleep?.close()]);
});

/** The named statements sent about one message (its id is every hot-path statement's first value), in order. */
function statements(messageId: string): string[] {
  const out: string[] = [];
  for (const [arg] of query.mock.calls as unknown as Array<[unknown]>) {
    const q = arg as { name?: string; values?: unknown[] } | undefined;
    if (q && typeof q === "object" && q.name && q.values?.[0] === messageId) out.push(q.name);
  }
  return out;
}

const HOLD_WRITES = ["chat_checkpoint_hold", "chat_checkpoint_heartbeat_hold", "chat_finish_reply_hold"];

interface HoldRow {
  status: string;
  content: string;
  hold_id: string | null;
  credits_held: string;
  available_after_reserve: string;
  max_output_tokens: number;
  prompt_tokens: number;
  user_tokens: number | null;
}

async function row(messageId: string): Promise<HoldRow> {
  const r = await db.query<HoldRow>(
    `SELECT a.status, a.content, a.hold_id, a.credits_held::text, a.available_after_reserve::text, a.max_output_tokens, a.prompt_tokens,
            u.token_count AS user_tokens
       FROM messages a JOIN messages u ON u.id = a.parent_id WHERE a.id = $1`, [messageId]);
  return r.rows[0]!;
}

/** The row names the hold billing placed for the reply, with the amounts `started` announced. */
async function expectHoldFacts(r: HoldRow, started: NonNullable<Collected["started"]>, userId: string, balance: bigint): Promise<void> {
  expect(r.hold_id).not.toBeNull();
  const hold = (await platform.billing.ledger.store.getHold(r.hold_id!))!;
  expect(hold.reference).toBe(started.assistantMessageId);
  expect(hold.accountId).toBe(userId);
  expect(BigInt(r.credits_held)).toBe(started.creditsHeld);
  expect(started.creditsHeld).toBeGreaterThan(0n);
  expect(BigInt(r.available_after_reserve)).toBe(balance - started.creditsHeld);
  expect(r.max_output_tokens).toBe(started.maxOutputTokens);
  expect(r.user_tokens).toBeGreaterThan(0);
}

describe("the hold is recorded by the reply's first write", () => {
  it("self-check: the spy sees chat-router's named statements (a spy that saw nothing would pass the checks below)", async () => {
    const u = await platform.user(10_000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-rec" });
    const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Hello", clientMessageId: "s" }));
    expect(c.finished).toBeDefined();
    expect(statements(c.started!.assistantMessageId).some((n) => n.startsWith("chat_finish_reply"))).toBe(true);
    expect(statements("00000000-0000-0000-0000-000000000000")).toEqual([]);
  });

  it("a short reply (send, regenerate, edit) sends no hold statement: its one final statement carries the hold", async () => {
    const u = await platform.user(10_000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-rec" });
    const send = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Name a colour", clientMessageId: "c1" }));
    expect(send.finished).toBeDefined();
    let balance = 10_000n;
    await expectHoldFacts(await row(send.started!.assistantMessageId), send.started!, u.id, balance);
    expect(statements(send.started!.assistantMessageId)).toEqual(["chat_finish_reply_hold"]);
    balance -= send.finished!.creditsCharged;

    const regen = await collect(u.chat.regenerateMessage({ messageId: send.started!.assistantMessageId }));
    expect(regen.finished).toBeDefined();
    await expectHoldFacts(await row(regen.started!.assistantMessageId), regen.started!, u.id, balance);
    expect(statements(regen.started!.assistantMessageId)).toEqual(["chat_finish_reply_hold"]);
    balance -= regen.finished!.creditsCharged;

    const edit = await collect(u.chat.editMessage({ messageId: send.started!.userMessageId, text: "Name a fruit", clientMessageId: "c1-edit" }));
    expect(edit.finished).toBeDefined();
    await expectHoldFacts(await row(edit.started!.assistantMessageId), edit.started!, u.id, balance);
    expect(statements(edit.started!.assistantMessageId)).toEqual(["chat_finish_reply_hold"]);
    // No replica ever sent a statement of its own for a hold (the old `chat_record_hold`).
    expect(query.mock.calls.some(([q]) => (q as { name?: string } | undefined)?.name === "chat_record_hold")).toBe(false);
  });

  it("a reply that fails before its first token still ends with the hold on its row (the final statement)", async () => {
    const u = await platform.user(10_000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-broken" });
    const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Hello", clientMessageId: "b1" }));
    expect(c.error?.code).toBe("upstream_unavailable");
    const r = await row(c.started!.assistantMessageId);
    expect(r.status).toBe("failed");
    await expectHoldFacts(r, c.started!, u.id, 10_000n);
    expect((await platform.billing.ledger.store.getHold(r.hold_id!))!.status).toBe("released");
    expect(statements(c.started!.assistantMessageId)).toEqual(["chat_finish_reply_hold"]);
    expect(await platform.available(u.id)).toBe(10_000n);
  });

  it("a long reply has the hold on its row from its first checkpoint on; later checkpoints and the end do not repeat it", async () => {
    const slow = await startVllmSim({ models: ["sim-model:4096"], outputTokens: { min: 60, max: 60 }, faults: { slowTokenMs: 25 } });
    try {
      await platform.addModel({ id: "m-slow", baseUrls: [slow.url], contextWindow: 4096, maxOutputTokens: 256, inputPer1k: 10n, outputPer1k: 100n });
      await waitFor(() => fast.module.catalog.getModel("m-slow") !== undefined, "the replica sees m-slow");
      const u = await platform.user(10_000n);
      const chat = fast.client(u.token);
      const { conversation } = await chat.createConversation({ modelId: "m-slow" });
      let checkedWhileStreaming = false;
      const c = await collect(chat.sendMessage({ conversationId: conversation!.id, text: "Tell me a long story", clientMessageId: "l1" }), async (s) => {
        if (checkedWhileStreaming || !s.started) return;
        const r = await row(s.started.assistantMessageId);
        if (r.status !== "streaming" || r.content === "") return; // not checkpointed yet
        await expectHoldFacts(r, s.started, u.id, 10_000n);
        expect(r.prompt_tokens).toBeGreaterThan(0); // what the sweeper bills a crashed reply's checkpoint for
        checkedWhileStreaming = true;
      });
      expect(c.finished).toBeDefined();
      expect(checkedWhileStreaming).toBe(true);
      const names = statements(c.started!.assistantMessageId);
      expect(names[0]).toBe("chat_checkpoint_hold");
      expect(names.filter((n) => HOLD_WRITES.includes(n))).toEqual(["chat_checkpoint_hold"]);
      expect(names.filter((n) => n === "chat_checkpoint").length).toBeGreaterThan(0);
      // (A checkpoint may still leave while the end is stored: it changes nothing once the reply is final.)
      expect(names).toContain("chat_finish_reply");
    } finally {
      await slow.close();
    }
  }, 30_000);

  it("a reply waiting for its model to wake up has the hold on its row after its first heartbeat", async () => {
    const u = await platform.user(10_000n);
    const chat = fast.client(u.token);
    const { conversation } = await chat.createConversation({ modelId: "m-asleep" });
    let id = "";
    const done = collect(chat.sendMessage({ conversationId: conversation!.id, text: "Hello", clientMessageId: "w1" }), (s) => {
      id ||= s.started?.assistantMessageId ?? "";
    });
    // The spy sees a statement when it leaves; the row once it committed.
    await waitFor(async () => statements(id).includes("chat_checkpoint_heartbeat_hold") && (await row(id)).hold_id !== null, "the first heartbeat", 10_000);
    const r = await row(id);
    expect(r.status).toBe("streaming");
    expect(r.content).toBe("");
    expect(r.hold_id).not.toBeNull();
    await waitFor(() => statements(id).filter((n) => n === "chat_checkpoint_heartbeat").length >= 1, "a later heartbeat", 10_000);
    await chat.stopGeneration({ messageId: id });
    const c = await done;
    expect(c.waiting.length).toBeGreaterThan(0);
    expect(c.finished).toBeDefined();
    await expectHoldFacts(await row(id), c.started!, u.id, 10_000n);
    const names = statements(id);
    expect(names[0]).toBe("chat_checkpoint_heartbeat_hold");
    expect(names.filter((n) => HOLD_WRITES.includes(n))).toEqual(["chat_checkpoint_heartbeat_hold"]);
    expect(names).toContain("chat_finish_reply");
    expect(await platform.available(u.id)).toBe(10_000n); // nothing produced: released
  }, 30_000);

  it("a second device's `started` before the first write: exact from the replica that streams it, 0 from another (documented)", async () => {
    const u = await platform.user(10_000n);
    const { conversation } = await u.chat.createConversation({ modelId: "m-asleep" });
    let started: Collected["started"];
    const done = collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Hello", clientMessageId: "d1" }), (s) => {
      started ??= s.started;
    });
    await waitFor(() => started !== undefined, "started");
    const id = started!.assistantMessageId;
    expect((await row(id)).hold_id).toBeNull(); // no write yet (checkpoints every 60 s on this replica)
    const resumed = async (chat: ReturnType<ChatReplica["client"]>) => {
      const it = chat.resumeStream({ messageId: id, offset: 0n })[Symbol.asyncIterator]();
      const first = await it.next();
      await it.return?.();
      const ev = (first.value as { event?: { event?: { case?: string; value?: unknown } } }).event?.event;
      expect(ev?.case).toBe("started");
      return ev!.value as NonNullable<Collected["started"]>;
    };
    const here = await resumed(u.chat);
    expect(here.creditsHeld).toBe(started!.creditsHeld);
    expect(here.maxOutputTokens).toBe(started!.maxOutputTokens);
    const elsewhere = await resumed(fast.client(u.token));
    expect(elsewhere.creditsHeld).toBe(0n);
    expect(elsewhere.maxOutputTokens).toBe(0);
    await u.chat.stopGeneration({ messageId: id });
    expect((await done).finished).toBeDefined();
    // From the final state on, every replica reads them from the row.
    const after = await resumed(fast.client(u.token));
    expect(after.creditsHeld).toBe(started!.creditsHeld);
    expect(after.maxOutputTokens).toBe(started!.maxOutputTokens);
  }, 30_000);
});
