// Integration (issue 19): a text model whose pool scaled to zero. Real Postgres, Redis and NATS, the real billing and
// model-registry modules, and a vLLM simulator in cold-start mode (it listens, but /health and /v1/* answer 503
// until its "model load" ends). The registry probes slowly here (30 s), so only chat-router's own wake probes can
// notice the wake: a reply that starts within a second of the simulator turning healthy shows they work.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { FinishReason, MessageStatus } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { ModelKind, ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { collect, startPlatform, waitFor, type ChatReplica, type Collected, type Platform } from "./harness.js";

let platform: Platform;
let sim: VllmSim;
/** Another chat-router replica whose wait limit is short (the wait-limit test). */
let impatient: ChatReplica;
/** A second simulator that never finishes its cold start within the tests. */
let asleep: VllmSim;

const COLD_START_S = 2;
const MODEL = "m-sleepy";
const NEVER = "m-never";

async function addScaleToZeroModel(id: string, url: string): Promise<void> {
  await platform.admin.upsertModel({
    model: {
      id, displayName: id, description: "", kind: ModelKind.TEXT, tags: [], contextWindow: 8192, maxOutputTokens: 256,
      prices: { inputPer1kTokens: 10n, outputPer1kTokens: 10n, perImage: 0n }, sortOrder: 0,
      upstream: { baseUrls: [url], resolveUrl: "", apiKeyEnv: "", servedModelName: "sim-model" },
      scaleToZero: true, coldStartSeconds: COLD_START_S,
    },
  });
}

async function scrape(replica: ChatReplica): Promise<string> {
  return (await fetch(`http://127.0.0.1:${replica.hosted.adminPort}/metrics`)).text();
}

/** The value of one series in a Prometheus text exposition (0 when absent). */
function series(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return 0;
}

beforeAll(async () => {
  sim = await startVllmSim({ models: ["sim-model:8192"], coldStartMs: 60_000, maxNumSeqs: 1 });
  asleep = await startVllmSim({ models: ["sim-model:8192"], coldStartMs: 600_000 });
  platform = await startPlatform({
    chatEnv: { CHAT_WAITING_EVENT_INTERVAL: "300ms", CHAT_WAKE_PROBE_INTERVAL: "100ms", CHAT_COLD_START_WAIT: "30s" },
    registryEnv: { REGISTRY_HEALTH_INTERVAL: "30s" },
  });
  impatient = await platform.startReplica({ CHAT_COLD_START_WAIT: "1500ms" });
  await addScaleToZeroModel(MODEL, sim.url);
  await addScaleToZeroModel(NEVER, asleep.url);
  for (const id of [MODEL, NEVER]) {
    await waitFor(() => [platform.chat, impatient].every((r) => r.module.catalog.getModel(id)?.status === ModelStatus.STANDBY), `${id} STANDBY`);
  }
}, 60_000);

afterAll(async () => {
  await platform?.stop();
  await sim?.close();
  await asleep?.close();
});

/** Puts the simulator back to sleep for `ms` (a pool scaled to zero that starts waking now). */
function sleepFor(ms: number): void {
  sim.coldStart(ms);
}

describe("a message to a model that scaled to zero", () => {
  it("is accepted and held, says it is warming up (repeatedly, with the expected wait), then streams once the replica is healthy, billed once", async () => {
    const u = await platform.user(10_000n);
    const { conversation } = await u.chat.createConversation({ modelId: MODEL });
    expect(platform.chat.module.catalog.getModel(MODEL)?.status).toBe(ModelStatus.STANDBY);
    sleepFor(1500);
    let gaugeWhileWaiting = -1;
    let heldWhileWaiting = -1n;
    const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Hello there", clientMessageId: "s2z-1" }), async (s) => {
      if (s.waiting.length === 1 && gaugeWhileWaiting < 0) {
        gaugeWhileWaiting = series(await scrape(platform.chat), "luna_chat_model_waiting_requests", { model: MODEL });
        heldWhileWaiting = 10_000n - (await platform.available(u.id));
      }
    });
    const readyAt = sim.readyAt();

    // started (the hold), then waiting ticks, then the reply.
    expect(c.order[0]).toBe("started");
    expect(c.order.at(-1)).toBe("finished");
    const firstDelta = c.order.indexOf("delta");
    expect(c.order.slice(1, firstDelta).every((e) => e === "waiting")).toBe(true);
    expect(c.order.slice(firstDelta).includes("waiting")).toBe(false);
    expect(c.waiting.length).toBeGreaterThanOrEqual(3); // 1.5 s at a 300 ms interval
    expect(c.waiting[0]).toMatchObject({ reason: "warming_up", modelId: MODEL, expectedWaitMs: BigInt(COLD_START_S * 1000) });
    expect(Number(c.waiting.at(-1)!.elapsedMs)).toBeGreaterThan(Number(c.waiting[0]!.elapsedMs));
    expect(heldWhileWaiting).toBe(c.started!.creditsHeld);
    expect(heldWhileWaiting).toBeGreaterThan(0n);
    expect(gaugeWhileWaiting).toBe(1);

    // The reply started within a second of the replica turning healthy (the registry would have taken 30 s).
    expect(c.firstDeltaAt! - readyAt).toBeLessThan(1000);
    expect(c.finished!.finishReason).toBe(FinishReason.STOP);
    expect(c.finished!.creditsCharged).toBeGreaterThan(0n);
    expect(await platform.available(u.id)).toBe(10_000n - c.finished!.creditsCharged);
    await platform.assertInvariants();

    const m = await scrape(platform.chat);
    expect(series(m, "luna_chat_model_requests_total", { model: MODEL, outcome: "waited" })).toBe(1);
    expect(series(m, "luna_chat_model_requests_total", { model: MODEL, outcome: "started" })).toBe(0);
    expect(series(m, "luna_chat_model_waiting_requests", { model: MODEL })).toBe(0);

    // Now awake: the next message starts at once, without a `waiting` event, and counts as started.
    const again = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "And again", clientMessageId: "s2z-2" }));
    expect(again.waiting).toEqual([]);
    expect(again.finished).toBeDefined();
    expect(series(await scrape(platform.chat), "luna_chat_model_requests_total", { model: MODEL, outcome: "started" })).toBe(1);
  }, 30_000);

  it("tells a second device following the reply from another replica that the model is warming up, then streams it there too", async () => {
    sleepFor(60_000);
    const u = await platform.user(10_000n);
    const { conversation } = await u.chat.createConversation({ modelId: MODEL });
    const elsewhere = impatient.client(u.token);
    let follower: Promise<Collected> | undefined;
    const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Two devices", clientMessageId: "s2z-follow" }), (s) => {
      if (s.waiting.length === 1 && !follower) {
        follower = collect(elsewhere.resumeStream({ messageId: s.started!.assistantMessageId, offset: 0n }), (f) => {
          if (f.waiting.length === 1) sleepFor(300);
        });
      }
    });
    const f = await follower!;
    expect(f.order[0]).toBe("started");
    expect(f.waiting.length).toBeGreaterThanOrEqual(1);
    expect(f.waiting[0]).toMatchObject({ reason: "warming_up", modelId: MODEL });
    expect(f.order.slice(f.order.indexOf("delta")).includes("waiting")).toBe(false);
    expect(f.text).toBe(c.text);
    expect(f.finished?.creditsCharged).toBe(c.finished!.creditsCharged);
  }, 20_000);

  it("releases the hold when the user stops it while it waits", async () => {
    sleepFor(60_000);
    const u = await platform.user(10_000n);
    const { conversation } = await u.chat.createConversation({ modelId: MODEL });
    let stopped: boolean | undefined;
    const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Stop me", clientMessageId: "s2z-stop" }), async (s) => {
      if (s.waiting.length === 1 && stopped === undefined) stopped = (await u.chat.stopGeneration({ messageId: s.started!.assistantMessageId })).stopped;
    });
    expect(stopped).toBe(true);
    expect(c.finished).toMatchObject({ finishReason: FinishReason.CANCELLED, creditsCharged: 0n, completionTokens: 0n });
    expect(c.deltas).toEqual([]);
    expect(await platform.available(u.id)).toBe(10_000n);
    await platform.assertInvariants();
  }, 20_000);

  it("releases the hold when the client goes away while it waits", async () => {
    sleepFor(60_000);
    const u = await platform.user(10_000n);
    const { conversation } = await u.chat.createConversation({ modelId: MODEL });
    const ac = new AbortController();
    let assistantId = "";
    const err = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: "Bye", clientMessageId: "s2z-gone" }, { signal: ac.signal }), (s) => {
      if (s.waiting.length === 1) {
        assistantId = s.started!.assistantMessageId;
        ac.abort();
      }
    }).catch((e: unknown) => e);
    expect(ConnectError.from(err).code).toBe(Code.Canceled);
    await waitFor(async () => (await platform.available(u.id)) === 10_000n, "the hold released");
    await waitFor(() => platform.chat.module.wake.waitingCounts().get(MODEL) === undefined, "the waiter gone");
    const got = await u.chat.getConversation({ conversationId: conversation!.id });
    expect(got.messages.find((m) => m.id === assistantId)?.status).toBe(MessageStatus.STOPPED);
    await platform.assertInvariants();
  }, 20_000);

  it("ends with UNAVAILABLE and a released hold when no replica wakes within CHAT_COLD_START_WAIT", async () => {
    const u = await platform.user(10_000n);
    const chat = impatient.client(u.token);
    const { conversation } = await chat.createConversation({ modelId: NEVER });
    let c: Collected | undefined;
    const started = Date.now();
    const err = await collect(chat.sendMessage({ conversationId: conversation!.id, text: "Anyone?", clientMessageId: "s2z-late" }), (s) => {
      c = s;
    }).catch((e: unknown) => e);
    const e = ConnectError.from(err);
    expect(e.code).toBe(Code.Unavailable);
    expect(e.rawMessage).toMatch(/warming up/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    expect(c!.order[0]).toBe("started");
    expect(c!.waiting.length).toBeGreaterThanOrEqual(1);
    expect(await platform.available(u.id)).toBe(10_000n);
    const got = await chat.getConversation({ conversationId: conversation!.id });
    const reply = got.messages.find((m) => m.id === c!.started!.assistantMessageId)!;
    expect(reply).toMatchObject({ status: MessageStatus.FAILED, errorCode: "warm_up_timeout", creditsCharged: 0n });
    const m = await scrape(impatient);
    expect(series(m, "luna_chat_model_requests_total", { model: NEVER, outcome: "waited" })).toBe(1);
    expect(series(m, "luna_chat_model_requests_total", { model: NEVER, outcome: "refused" })).toBe(1);
    await platform.assertInvariants();
  }, 20_000);

  it("serves several waiters once the model is up, in the order they arrived", async () => {
    sleepFor(60_000);
    const users = await Promise.all([1, 2, 3].map(() => platform.user(10_000n)));
    const convs = await Promise.all(users.map((u) => u.chat.createConversation({ modelId: MODEL })));
    // The order in which the replies finished at the client (not millisecond timestamps: two may share one).
    const finishOrder: number[] = [];
    const runs: Array<Promise<Collected>> = [];
    for (let i = 0; i < users.length; i++) {
      let waitingSeen!: () => void;
      const seen = new Promise<void>((r) => (waitingSeen = r));
      runs.push(collect(users[i]!.chat.sendMessage({ conversationId: convs[i]!.conversation!.id, text: `Waiter ${i}`, clientMessageId: `s2z-w${i}` }), (s) => {
        if (s.waiting.length === 1) waitingSeen();
        if (s.finished && !finishOrder.includes(i)) finishOrder.push(i);
      }));
      await seen; // the next one arrives after this one is waiting
    }
    expect(series(await scrape(platform.chat), "luna_chat_model_waiting_requests", { model: MODEL })).toBe(3);
    sleepFor(300);
    const results = await Promise.all(runs);
    for (const [i, c] of results.entries()) {
      expect(c.finished, `waiter ${i}`).toBeDefined();
      expect(c.text.length).toBeGreaterThan(0);
      expect(await platform.available(users[i]!.id)).toBe(10_000n - c.finished!.creditsCharged);
    }
    // The simulator runs one request at a time, in the order it received them: the order the router released them.
    expect(finishOrder).toEqual([0, 1, 2]);
    await platform.assertInvariants();
  }, 30_000);
});
