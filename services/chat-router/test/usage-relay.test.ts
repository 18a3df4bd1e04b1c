// The usage events of replies leave through the outbox relay's NOTIFY-driven passes, which wait
// CHAT_RELAY_NOTIFY_DELAY to gather the commits of a burst into one batch (one transaction, one round of JetStream
// acks), instead of a kick — and a pass — per reply; and every event still arrives.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { fromBinary } from "@bufbuild/protobuf";
import { connect } from "@nats-io/transport-node";
import { startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { UsageRecordedSchema } from "@luna/contracts/luna/events/v1/usage_events_pb.js";
import { collect, startPlatform, waitFor, type Platform } from "./harness.js";

const DELAY_MS = 3000;
const REPLIES = 4;
let platform: Platform;
let sim: VllmSim;

beforeAll(async () => {
  sim = await startVllmSim({ models: ["sim-model:4096"], outputTokens: { min: 5, max: 10 } });
  platform = await startPlatform({ chatEnv: { CHAT_RELAY_NOTIFY_DELAY: `${DELAY_MS}ms` } });
  await platform.addModel({ id: "m-relay", baseUrls: [sim.url], contextWindow: 4096, maxOutputTokens: 64 });
});

afterAll(async () => {
  await platform?.stop();
  await sim?.close();
});

describe("usage events and the outbox relay", () => {
  it("publishes the usage events of replies that end one after another in one batch, not one pass each", async () => {
    const nc = await connect({ servers: platform.natsUrl });
    const arrived = new Set<string>();
    const sub = nc.subscribe("luna.events.usage.recorded", { callback: (_e, m) => void arrived.add(fromBinary(UsageRecordedSchema, m.data).reference) });
    const db = new pg.Client({ connectionString: platform.dbs.chat.url });
    await db.connect();
    try {
      const u = await platform.user(10_000n);
      const ids: string[] = [];
      const t0 = performance.now();
      for (let i = 0; i < REPLIES; i++) {
        const { conversation } = await u.chat.createConversation({ modelId: "m-relay" });
        const c = await collect(u.chat.sendMessage({ conversationId: conversation!.id, text: `Hello ${i}`, clientMessageId: "r" }));
        expect(c.finished).toBeDefined();
        ids.push(c.started!.assistantMessageId);
      }
      const spanMs = performance.now() - t0;
      await waitFor(() => ids.every((id) => arrived.has(id)), "every usage event", 3 * DELAY_MS + 10_000);
      // A batch marks its rows published in one statement: one batch, one published_at. Passes start at least the
      // delay apart, so replies that all ended within it are split at most once; a kick per reply made one each.
      const { rows } = await db.query<{ batches: number }>(
        "SELECT count(DISTINCT published_at)::int AS batches FROM outbox_events WHERE subject = 'luna.events.usage.recorded'");
      expect(spanMs).toBeLessThan(DELAY_MS);
      expect(rows[0]!.batches).toBeLessThanOrEqual(2);
    } finally {
      sub.unsubscribe();
      await nc.close();
      await db.end();
    }
  });
});
