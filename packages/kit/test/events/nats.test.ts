// Streams, consumers and publishing against the shared NATS (2.9): create-or-update, deduplication, headers.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { ROOT_CONTEXT, TraceFlags, context, trace } from "@opentelemetry/api";
import { testServers } from "../../src/testing/index.js";
import { connectNats, ensureConsumer, ensureStreams, natsReady, publishEvent } from "../../src/nats.js";
import type { StreamSpec } from "../../src/nats.js";
import { ensureContextManager } from "../../src/tracing.js";
import { captureLog, encode, streamMessages, uniq } from "./helpers.js";

const id = uniq();
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
const created: string[] = [];

beforeAll(async () => {
  nc = await connectNats({ servers: testServers().natsUrl, name: "kit-nats-test", log: captureLog() });
  js = jetstream(nc);
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  for (const s of created) await jsm?.streams.delete(s).catch(() => undefined);
  await nc?.drain();
});

function spec(suffix: string, over: Partial<StreamSpec> = {}): StreamSpec {
  const name = `T_NATS_${id}_${suffix}`;
  created.push(name);
  return { name, subjects: [`tna${id}${suffix.toLowerCase()}.>`], retention: "limits", maxAgeMs: 3600_000, ...over };
}

describe("ensureStreams", () => {
  it("creates streams with file storage and a 2-minute duplicate window, and is idempotent", async () => {
    const s = spec("A");
    await ensureStreams(nc, [s]);
    const first = await jsm.streams.info(s.name);
    await ensureStreams(nc, [s]);
    const second = await jsm.streams.info(s.name);
    expect(first.config).toMatchObject({ retention: "limits", storage: "file", subjects: s.subjects,
      max_age: 3600_000 * 1e6, duplicate_window: 120_000 * 1e6 });
    expect(second.created).toBe(first.created);
    expect(second.config).toEqual(first.config);
  });

  it("updates limits and subjects in place", async () => {
    const s = spec("B");
    await ensureStreams(nc, [s]);
    await ensureStreams(nc, [{ ...s, maxAgeMs: 7_200_000, subjects: [...s.subjects, `tna${id}b2.>`] }]);
    const info = await jsm.streams.info(s.name);
    expect(info.config.max_age).toBe(7_200_000 * 1e6);
    expect(info.config.subjects).toEqual([...s.subjects, `tna${id}b2.>`]);
  });

  it("refuses to change retention in place, with a message naming the stream", async () => {
    const s = spec("C");
    await ensureStreams(nc, [s]);
    await expect(ensureStreams(nc, [{ ...s, retention: "workqueue" }])).rejects.toThrow(new RegExp(`${s.name}.*retention`));
  });

  it("rejects an invalid spec before calling the server", async () => {
    await expect(ensureStreams(nc, [{ name: "bad.name", subjects: ["x.>"], retention: "limits", maxAgeMs: 0 }]))
      .rejects.toThrow(/invalid stream name/);
    await expect(ensureStreams(nc, [{ name: "NOSUBJ", subjects: [], retention: "limits", maxAgeMs: 0 }]))
      .rejects.toThrow(/at least one subject/);
  });
});

describe("ensureConsumer", () => {
  it("creates a durable explicit-ack pull consumer with one filter subject, and updates it in place", async () => {
    const s = spec("D");
    await ensureStreams(nc, [s]);
    const filter = s.subjects[0]!.replace(">", "orders.>");
    const c1 = await ensureConsumer(jsm, { stream: s.name, durable: "workers", filterSubject: filter, ackWaitMs: 30_000, maxAckPending: 10 });
    expect(c1.config).toMatchObject({ durable_name: "workers", ack_policy: "explicit", filter_subject: filter,
      ack_wait: 30_000 * 1e6, max_ack_pending: 10, max_deliver: -1 });
    const again = await ensureConsumer(jsm, { stream: s.name, durable: "workers", filterSubject: filter, ackWaitMs: 30_000, maxAckPending: 10 });
    expect(again.created).toBe(c1.created);
    const c2 = await ensureConsumer(jsm, { stream: s.name, durable: "workers", filterSubject: filter, ackWaitMs: 60_000, maxAckPending: 10 });
    expect(c2.config.ack_wait).toBe(60_000 * 1e6);
    expect(c2.created).toBe(c1.created);
  });

  it("sets server-side ack-timeout backoff when asked, and checks the server's rule for it", async () => {
    const s = spec("E");
    await ensureStreams(nc, [s]);
    const c = await ensureConsumer(jsm, { stream: s.name, durable: "bo", maxDeliver: 4, ackTimeoutBackoffMs: [5_000, 20_000] });
    expect(c.config.backoff).toEqual([5_000 * 1e6, 20_000 * 1e6]);
    await expect(ensureConsumer(jsm, { stream: s.name, durable: "bo2", ackTimeoutBackoffMs: [5_000] })).rejects.toThrow(/maxDeliver/);
  });

  it("rejects a durable name the server would refuse", async () => {
    await expect(ensureConsumer(jsm, { stream: "S", durable: "a.b" })).rejects.toThrow(/durable name/);
  });
});

describe("publishEvent", () => {
  it("returns the stream sequence and reports a repeated msgId as a duplicate without storing it twice", async () => {
    const s = spec("F");
    await ensureStreams(nc, [s]);
    const subject = s.subjects[0]!.replace(">", "x");
    const a = await publishEvent(js, subject, encode("1"), { msgId: "evt-1", headers: { "Luna-Kind": "k" } });
    const b = await publishEvent(js, subject, encode("1"), { msgId: "evt-1" });
    expect(a).toEqual({ seq: 1, duplicate: false, stream: s.name });
    expect(b).toEqual({ seq: 1, duplicate: true, stream: s.name });
    const msgs = await streamMessages(jsm, s.name);
    expect(msgs).toHaveLength(1);
    expect(msgs[0]!.headers).toMatchObject({ "Nats-Msg-Id": "evt-1", "Luna-Kind": "k" });
  });

  it("adds the active span's traceparent, and keeps one given in the headers", async () => {
    ensureContextManager();
    const s = spec("G");
    await ensureStreams(nc, [s]);
    const subject = s.subjects[0]!.replace(">", "x");
    const traceId = "11111111111111111111111111111111";
    const active = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: "2222222222222222", traceFlags: TraceFlags.SAMPLED });
    await context.with(active, () => publishEvent(js, subject, encode("a"), { msgId: "a" }));
    const given = "00-33333333333333333333333333333333-4444444444444444-01";
    await context.with(active, () => publishEvent(js, subject, encode("b"), { msgId: "b", headers: { traceparent: given } }));
    const [a, b] = await streamMessages(jsm, s.name);
    expect(a!.headers.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    expect(b!.headers.traceparent).toBe(given);
  });

  it("fails (no responders) when no stream captures the subject", async () => {
    await expect(publishEvent(js, `nostream${id}.x`, encode("x"), { msgId: "x", timeoutMs: 1000 })).rejects.toThrow();
  });
});

describe("natsReady", () => {
  it("passes on a live connection and fails on a closed one", async () => {
    await natsReady(nc);
    const other = await connectNats({ servers: testServers().natsUrl, name: "kit-nats-ready", log: captureLog() });
    await other.close();
    await expect(natsReady(other)).rejects.toThrow(/closed/);
  });

  it("connectNats rejects a missing server list or name", async () => {
    await expect(connectNats({ servers: " , ", name: "x", log: captureLog() })).rejects.toThrow(/servers/);
    await expect(connectNats({ servers: testServers().natsUrl, name: "", log: captureLog() })).rejects.toThrow(/name/);
  });
});
