import { describe, expect, it } from "vitest";
import { LiveQueue } from "../server/live-queue.js";
import { Mutex } from "./mutex.js";

describe("Mutex", () => {
  it("lets one holder in at a time, in arrival order", async () => {
    const m = new Mutex();
    const log: string[] = [];
    const run = async (name: string, ms: number) => {
      const release = await m.lock();
      log.push(`${name}+`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`${name}-`);
      release();
    };
    await Promise.all([run("a", 20), run("b", 1), run("c", 1)]);
    expect(log).toEqual(["a+", "a-", "b+", "b-", "c+", "c-"]);
  });

  it("idle() waits for the holder and the waiters of the moment, without taking the lock", async () => {
    const m = new Mutex();
    await m.idle(); // free: resolves at once
    const log: string[] = [];
    const releaseA = await m.lock();
    const b = m.lock().then((release) => { log.push("b+"); return release; });
    const idle = m.idle().then(() => log.push("idle"));
    await new Promise((r) => setTimeout(r, 10));
    expect(log).toEqual([]);
    releaseA();
    const releaseB = await b;
    await new Promise((r) => setTimeout(r, 10));
    expect(log).toEqual(["b+"]);
    releaseB();
    await idle;
    expect(log).toEqual(["b+", "idle"]);
    // idle() took nothing: the lock is free.
    (await m.lock())();
  });
});

describe("LiveQueue", () => {
  it("hands items over in order, drops the oldest when full, and times out", async () => {
    const q = new LiveQueue<number>(2);
    const signal = new AbortController().signal;
    q.push(1);
    q.push(2);
    q.push(3);
    expect(await q.next(10, signal)).toBe(2);
    expect(await q.next(10, signal)).toBe(3);
    expect(await q.next(10, signal)).toBeUndefined();
    const waiting = q.next(1000, signal);
    q.push(4);
    expect(await waiting).toBe(4);
    const ac = new AbortController();
    const aborted = q.next(10_000, ac.signal);
    ac.abort();
    expect(await aborted).toBeUndefined();
  });
});
