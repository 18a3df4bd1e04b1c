import { describe, expect, it } from "vitest";
import { headers as natsHeaders } from "@nats-io/nats-core";
import {
  DEADLETTER_SUBJECTS, EVENTS_SUBJECTS, IMAGE_JOBS_SUBJECTS, assertHeaders, assertPublishSubject, deadLetterSubject,
  defaultStreams, headersToRecord, publishEvent, retryDelayMs, runConsumer,
} from "./nats.js";
import type { JetStreamClient } from "@nats-io/jetstream";

const silent = { info() {}, warn() {}, error() {}, debug() {} };

// Subject matching as the server does it, to check the dead-letter subtree against the other streams.
function matches(filter: string, subject: string): boolean {
  const f = filter.split(".");
  const s = subject.split(".");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === ">") return s.length > i;
    if (i >= s.length || (f[i] !== "*" && f[i] !== s[i])) return false;
  }
  return f.length === s.length;
}

describe("retryDelayMs", () => {
  it("uses backoff[n-1] after the n-th failed attempt and repeats the last value", () => {
    const b = [100, 500, 2000];
    expect([1, 2, 3, 4, 9].map((n) => retryDelayMs(b, n))).toEqual([100, 500, 2000, 2000, 2000]);
  });
  it("is 0 without a schedule", () => {
    expect(retryDelayMs([], 3)).toBe(0);
  });
});

describe("subject and header validation", () => {
  it("accepts concrete subjects and rejects wildcards, blanks and empty tokens", () => {
    expect(() => assertPublishSubject("luna.events.user.created")).not.toThrow();
    for (const bad of ["", "luna.events.>", "luna.*.x", "luna..x", "luna.ev ents", ".luna", "luna."]) {
      expect(() => assertPublishSubject(bad), bad).toThrow(/subject/);
    }
  });
  it("rejects header names with ':' or spaces and values with line breaks", () => {
    expect(() => assertHeaders({ "Luna-Ok": "v", traceparent: "00-abc" })).not.toThrow();
    expect(() => assertHeaders({ "a:b": "v" })).toThrow(/header name/);
    expect(() => assertHeaders({ "a b": "v" })).toThrow(/header name/);
    expect(() => assertHeaders({ a: "v\r\nInjected: x" })).toThrow(/CR\/LF/);
  });
});

describe("headersToRecord", () => {
  it("copies the first value of each header", () => {
    const h = natsHeaders();
    h.set("A", "1");
    h.append("A", "2");
    h.set("traceparent", "00-x");
    expect(headersToRecord(h)).toEqual({ A: "1", traceparent: "00-x" });
    expect(headersToRecord(undefined)).toEqual({});
  });
});

describe("default streams", () => {
  it("defines LUNA_EVENTS (limits, 7 days), LUNA_IMAGE_JOBS (work queue) and LUNA_DEADLETTER, all on file storage", () => {
    const [events, jobs, dlq] = defaultStreams();
    expect(events).toMatchObject({ name: "LUNA_EVENTS", subjects: ["luna.events.>"], retention: "limits", storage: "file",
      maxAgeMs: 7 * 24 * 3600_000, duplicateWindowMs: 120_000 });
    expect(jobs).toMatchObject({ name: "LUNA_IMAGE_JOBS", subjects: ["luna.image.jobs.>"], retention: "workqueue", storage: "file" });
    expect(dlq).toMatchObject({ name: "LUNA_DEADLETTER", subjects: ["luna.deadletter.>"], retention: "limits", storage: "file" });
    expect(defaultStreams({ eventsMaxAgeMs: 3600_000 })[0]?.maxAgeMs).toBe(3600_000);
  });
  it("puts dead letters under a subtree no other Luna stream captures", () => {
    const dl = deadLetterSubject("LUNA_IMAGE_JOBS", "pool-flux");
    expect(matches(DEADLETTER_SUBJECTS, dl)).toBe(true);
    expect(matches(EVENTS_SUBJECTS, dl)).toBe(false);
    expect(matches(IMAGE_JOBS_SUBJECTS, dl)).toBe(false);
    // sanity of the matcher itself
    expect(matches(EVENTS_SUBJECTS, "luna.events.user.created")).toBe(true);
  });
});

describe("publishEvent input checks", () => {
  const js = { publish: () => Promise.reject(new Error("must not be called")) } as unknown as JetStreamClient;
  it("rejects a bad subject, a missing msgId or a bad header before publishing", async () => {
    await expect(publishEvent(js, "luna.events.>", new Uint8Array(), { msgId: "x" })).rejects.toThrow(/subject/);
    await expect(publishEvent(js, "luna.events.a", new Uint8Array(), { msgId: "" })).rejects.toThrow(/msgId/);
    await expect(publishEvent(js, "luna.events.a", new Uint8Array(), { msgId: "x", headers: { "a:b": "1" } }))
      .rejects.toThrow(/header name/);
  });
});

describe("runConsumer option checks", () => {
  const js = {} as JetStreamClient;
  const base = { js, stream: "S", durable: "d", log: silent, handle: async () => "ack" as const };
  it("throws at the call for options the loop could never use", () => {
    expect(() => runConsumer({ ...base, concurrency: 0 })).toThrow(/concurrency/);
    expect(() => runConsumer({ ...base, maxDeliver: 0 })).toThrow(/maxDeliver/);
    expect(() => runConsumer({ ...base, durable: "a.b" })).toThrow(/durable/);
    expect(() => runConsumer({ ...base, deadLetterSubject: "x.*" })).toThrow(/subject/);
    expect(() => runConsumer({ ...base, ackWaitMs: 10 })).toThrow(/ackWaitMs/);
    expect(() => runConsumer({ ...base, backoffMs: [-1] })).toThrow(/backoffMs/);
  });
});
