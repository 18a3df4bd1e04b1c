// runConsumer against a real NATS JetStream: retries with backoff, dead-lettering, working(), stop() draining,
// concurrency and trace continuation. NATS restarts are in restart.test.ts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { ROOT_CONTEXT, TraceFlags, context, trace } from "@opentelemetry/api";
import { testServers } from "../../src/testing/index.js";
import {
  DEADLETTER_STREAM, DeadLetterHeaders, connectNats, deadLetterSubject, defaultStreams, ensureStreams, publishEvent,
  runConsumer,
} from "../../src/nats.js";
import type { ConsumedMessage, ConsumerHandle, HandlerResult, RunConsumerOptions } from "../../src/nats.js";
import { ensureContextManager } from "../../src/tracing.js";
import { captureLog, decode, encode, gate, streamMessages, uniq, waitFor } from "./helpers.js";

const id = uniq();
const STREAM = `T_CONSUMER_${id}`;
const SUBJ = `tco${id}`;

let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
const handles: ConsumerHandle[] = [];

beforeAll(async () => {
  nc = await connectNats({ servers: testServers().natsUrl, name: "kit-consumer-test", log: captureLog() });
  js = jetstream(nc);
  jsm = await jetstreamManager(nc);
  // LUNA_DEADLETTER is shared by every consumer; this file's dead letters live under its own stream name.
  const [, , dlq] = defaultStreams();
  await ensureStreams(nc, [{ name: STREAM, subjects: [`${SUBJ}.>`], retention: "limits", maxAgeMs: 0 }, dlq!]);
});

afterAll(async () => {
  await Promise.all(handles.splice(0).map((h) => h.stop()));
  await jsm?.streams.delete(STREAM).catch(() => undefined);
  await nc?.drain();
});

/** A consumer on its own subject and durable, so tests never see each other's messages. */
function setup(handle: (m: ConsumedMessage) => Promise<HandlerResult>, opts: Partial<RunConsumerOptions> = {}) {
  const name = uniq();
  const subject = `${SUBJ}.${name}`;
  const durable = `d_${name}`;
  const log = captureLog();
  const start = (): ConsumerHandle => {
    const h = runConsumer({ js, stream: STREAM, durable, filterSubject: subject, log, handle, ...opts });
    handles.push(h);
    return h;
  };
  const publish = (text: string, msgId = uniq()) => publishEvent(js, subject, encode(text), { msgId });
  return { subject, durable, log, start, publish };
}

async function deadLetters(durable: string) {
  const all = await streamMessages(jsm, DEADLETTER_STREAM);
  return all.filter((m) => m.subject === deadLetterSubject(STREAM, durable));
}

/** An admission lock granting one holder at a time, in request order; `onAdmit` runs as each is granted. */
function fifoAdmission(onAdmit: () => void = () => undefined): () => Promise<() => void> {
  let tail = Promise.resolve();
  return () => {
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    const prev = tail;
    tail = prev.then(() => held);
    return prev.then(() => {
      onAdmit();
      return release;
    });
  };
}

describe("runConsumer", () => {
  it("retries with the backoff delays, then acks", async () => {
    const seen: { n: number; at: number }[] = [];
    const t = setup(async (m) => {
      seen.push({ n: m.deliveryCount, at: Date.now() });
      return m.deliveryCount < 3 ? "retry" : "ack";
    }, { backoffMs: [300, 700], maxDeliver: 5 });
    await t.publish("r");
    t.start();
    await waitFor("third delivery", () => seen.length === 3);
    expect(seen.map((s) => s.n)).toEqual([1, 2, 3]);
    // The server holds a nak'ed message back for the requested delay.
    expect(seen[1]!.at - seen[0]!.at).toBeGreaterThanOrEqual(280);
    expect(seen[2]!.at - seen[1]!.at).toBeGreaterThanOrEqual(680);
    await waitFor("acked", async () => (await jsm.consumers.info(STREAM, t.durable)).num_ack_pending === 0);
  });

  it("treats a thrown error as retry and dead-letters the message after maxDeliver attempts", async () => {
    let calls = 0;
    const t = setup(async () => {
      calls++;
      throw new Error("database unavailable");
    }, { backoffMs: [50], maxDeliver: 3 });
    await t.publish("poison-ish", "orig-msg-id");
    t.start();
    const [dl] = await waitFor("dead letter", async () => { const d = await deadLetters(t.durable); return d.length > 0 && d; });
    expect(decode(dl!.data)).toBe("poison-ish");
    expect(dl!.headers[DeadLetterHeaders.subject]).toBe(t.subject);
    expect(dl!.headers[DeadLetterHeaders.deliveries]).toBe("3");
    expect(dl!.headers[DeadLetterHeaders.reason]).toContain("database unavailable");
    expect(dl!.headers[DeadLetterHeaders.originalMsgId]).toBe("orig-msg-id");
    expect(calls).toBe(3);
    // Terminated: no further delivery, nothing pending.
    await waitFor("settled", async () => {
      const info = await jsm.consumers.info(STREAM, t.durable);
      return info.num_ack_pending === 0 && info.num_pending === 0;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(calls).toBe(3);
    expect(t.log.messages("warn")).toContain("message dead-lettered");
  });

  it("dead-letters a message the handler rejects with term at once", async () => {
    let calls = 0;
    const t = setup(async () => { calls++; return "term"; }, { maxDeliver: 5 });
    await t.publish("invalid");
    t.start();
    const [dl] = await waitFor("dead letter", async () => { const d = await deadLetters(t.durable); return d.length > 0 && d; });
    expect(dl!.headers[DeadLetterHeaders.deliveries]).toBe("1");
    expect(calls).toBe(1);
    await waitFor("terminated", async () => (await jsm.consumers.info(STREAM, t.durable)).num_ack_pending === 0);
  });

  it("dead-letters without calling the handler again when an attempt never completed", async () => {
    const stuck = gate();
    let calls = 0;
    const t = setup(async () => {
      calls++;
      if (calls === 1) await stuck.wait; // e.g. the process hung or died: no ack, no nak
      return "ack";
    }, { maxDeliver: 1, ackWaitMs: 1000, concurrency: 2 });
    await t.publish("hang");
    t.start();
    const [dl] = await waitFor("dead letter", async () => { const d = await deadLetters(t.durable); return d.length > 0 && d; });
    expect(dl!.headers[DeadLetterHeaders.reason]).toMatch(/never completed/);
    expect(calls).toBe(1);
    await waitFor("terminated", async () => (await jsm.consumers.info(STREAM, t.durable)).num_ack_pending === 0);
    stuck.open();
  });

  it("with deadLetterSubject null, terminates without a copy", async () => {
    const t = setup(async () => "term", { deadLetterSubject: null });
    await t.publish("drop");
    t.start();
    await waitFor("terminated", () => t.log.messages("warn").includes("message terminated (no dead-letter subject)"));
    await waitFor("settled", async () => (await jsm.consumers.info(STREAM, t.durable)).num_ack_pending === 0);
    expect(await deadLetters(t.durable)).toEqual([]);
  });

  it("working() keeps a handler longer than ack_wait from being redelivered", async () => {
    let calls = 0;
    const t = setup(async (m) => {
      calls++;
      for (let i = 0; i < 8; i++) {
        await new Promise((r) => setTimeout(r, 300));
        m.working();
      }
      return "ack";
    }, { ackWaitMs: 1000, concurrency: 2 });
    await t.publish("long");
    t.start();
    await waitFor("acked", async () => {
      const info = await jsm.consumers.info(STREAM, t.durable);
      return calls > 0 && info.num_ack_pending === 0 && info.num_pending === 0;
    });
    expect(calls).toBe(1);
  });

  it("without working() the same handler is redelivered after ack_wait (control for the test above)", async () => {
    let calls = 0;
    const t = setup(async () => {
      calls++;
      await new Promise((r) => setTimeout(r, 2400));
      return "ack";
    }, { ackWaitMs: 1000, concurrency: 2 });
    await t.publish("long");
    t.start();
    await waitFor("redelivered", () => calls >= 2);
  });

  it("stop() stops pulling and waits for in-flight handlers to settle their messages", async () => {
    const release = gate();
    const started = gate();
    const handled: string[] = [];
    const t = setup(async (m) => {
      started.open();
      await release.wait;
      handled.push(decode(m.data));
      return "ack";
    });
    await t.publish("first");
    const h = t.start();
    await started.wait;
    let stopped = false;
    const stopping = h.stop().then(() => { stopped = true; });
    await new Promise((r) => setTimeout(r, 300));
    expect(stopped).toBe(false); // still waiting for the handler
    release.open();
    await stopping;
    expect(handled).toEqual(["first"]);
    await t.publish("after-stop");
    await new Promise((r) => setTimeout(r, 500));
    const info = await jsm.consumers.info(STREAM, t.durable);
    expect(info.num_ack_pending).toBe(0); // "first" was acked before stop() resolved
    expect(info.num_pending).toBe(1); // "after-stop" was not pulled
    expect(handled).toEqual(["first"]);
  });

  it("stop({ graceMs }) lets an in-flight handler finish undisturbed, and aborts its signal only once the grace is over", async () => {
    const started = gate();
    const release = gate();
    const outcome: string[] = [];
    const t = setup(async (m) => {
      started.open();
      // Finishes when released, or gives up (hands the message back) when its signal aborts.
      const aborted = new Promise<"aborted">((r) => m.signal.addEventListener("abort", () => r("aborted"), { once: true }));
      const how = await Promise.race([release.wait.then(() => "finished" as const), aborted]);
      outcome.push(`${decode(m.data)}:${how}`);
      return how === "finished" ? "ack" : "retry";
    });

    // Within the grace: the handler is not aborted, finishes, and its message is acked.
    await t.publish("drained");
    const h1 = t.start();
    await started.wait;
    const stopping = h1.stop({ graceMs: 10_000 });
    await new Promise((r) => setTimeout(r, 300));
    expect(outcome).toEqual([]); // without the grace the signal would have aborted at once
    release.open();
    await stopping;
    expect(outcome).toEqual(["drained:finished"]);
    // Acked (an ack is a publish the server handles a moment later), not handed back.
    await waitFor("the drained message acked", async () => {
      const info = await jsm.consumers.info(STREAM, t.durable);
      return info.num_ack_pending === 0 && info.num_pending === 0 && info.num_redelivered === 0 ? info : undefined;
    }, { timeoutMs: 5000 });
  });

  it("stop({ graceMs }) aborts a handler still running when the grace ends (the message goes back for redelivery)", async () => {
    const started = gate();
    const outcome: string[] = [];
    const t = setup(async (m) => {
      started.open();
      await new Promise<void>((r) => m.signal.addEventListener("abort", () => r(), { once: true }));
      outcome.push(decode(m.data));
      return "retry";
    }, { backoffMs: [60_000] });
    await t.publish("too-long");
    const h = t.start();
    await started.wait;
    const began = Date.now();
    await h.stop({ graceMs: 400 });
    expect(Date.now() - began).toBeGreaterThanOrEqual(390);
    expect(outcome).toEqual(["too-long"]);
    expect(t.log.messages("warn").some((m) => /still running after the stop grace/.test(m))).toBe(true);
    const info = await jsm.consumers.info(STREAM, t.durable);
    expect(info.num_ack_pending + info.num_pending + info.num_redelivered).toBeGreaterThan(0); // nak'ed, not acked
  });

  it("runs at most `concurrency` handlers at once", async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    let done = 0;
    const t = setup(async () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((r) => setTimeout(r, 250));
      inFlight--;
      done++;
      return "ack";
    }, { concurrency: 3 });
    for (let i = 0; i < 9; i++) await t.publish(`m${i}`);
    t.start();
    await waitFor("all handled", () => done === 9);
    expect(maxInFlight).toBe(3);
  });

  it("with admit, pulls only when admitted; releaseAdmission lets the next message in while the handler finishes", async () => {
    // One admission at a time (a FIFO lock): what the image worker does with its ComfyUI.
    const admit = fifoAdmission();
    const finishFirst = gate();
    const events: string[] = [];
    const t = setup(async (m) => {
      const text = decode(m.data);
      events.push(`start ${text}`);
      if (text === "first") {
        m.releaseAdmission(); // its "resource" is free: the other slot may pull while this handler finishes
        await finishFirst.wait;
      }
      events.push(`end ${text}`);
      return "ack";
    }, { concurrency: 2, admit });
    await t.publish("first");
    await t.publish("second");
    t.start();
    await waitFor("second handled", () => events.includes("end second"));
    expect(events).toEqual(["start first", "start second", "end second"]);
    finishFirst.open();
    await waitFor("first handled", () => events.includes("end first"));
  });

  it("with admit, a handler that keeps its admission holds back the other slots, which take no message meanwhile", async () => {
    let admitted = 0;
    const admit = fifoAdmission(() => admitted++);
    const finishFirst = gate();
    const firstStarted = gate();
    const handled: string[] = [];
    const t = setup(async (m) => {
      if (decode(m.data) === "first") {
        firstStarted.open();
        await finishFirst.wait;
      }
      handled.push(decode(m.data));
      return "ack";
    }, { concurrency: 2, admit });
    await t.publish("first");
    await t.publish("second");
    const h = t.start();
    await firstStarted.wait;
    await new Promise((r) => setTimeout(r, 300));
    // The second slot waits for admission: it has not pulled, so "second" is still in the stream for anyone.
    const info = await jsm.consumers.info(STREAM, t.durable);
    expect(info.num_ack_pending).toBe(1);
    expect(info.num_pending).toBe(1);
    expect(admitted).toBe(1);
    finishFirst.open();
    await waitFor("both handled", () => handled.length === 2);
    expect(handled).toEqual(["first", "second"]);
    // stop() while a slot waits for admission (or for a message) returns.
    await h.stop();
  });

  it("runs the handler in the publisher's trace", async () => {
    ensureContextManager();
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    let seen: string | undefined;
    const t = setup(async () => {
      seen = trace.getActiveSpan()?.spanContext().traceId;
      return "ack";
    });
    const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: "b7ad6b7169203331", traceFlags: TraceFlags.SAMPLED });
    await context.with(parent, () => t.publish("traced"));
    t.start();
    await waitFor("handled", () => seen);
    expect(seen).toBe(traceId);
  });

  it("exposes msgId, headers and the stream sequence to the handler", async () => {
    let got: ConsumedMessage | undefined;
    const t = setup(async (m) => { got = m; return "ack"; });
    const ack = await publishEvent(js, t.subject, encode("x"), { msgId: "evt-1", headers: { "Luna-Kind": "k" } });
    t.start();
    await waitFor("handled", () => got);
    expect(got).toMatchObject({ subject: t.subject, msgId: "evt-1", deliveryCount: 1, streamSeq: ack.seq });
    expect(got!.headers["Luna-Kind"]).toBe("k");
  });
});
