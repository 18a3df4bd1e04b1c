import { describe, expect, it } from "vitest";
import { Batcher } from "./batcher.js";

interface Call {
  key: string;
  value: number;
}

/** A batcher whose statements are controllable promises, recording what ran how. */
function harness(opts: { maxInFlight?: number; maxSize?: number; many?: (inputs: Call[]) => Promise<(number | undefined)[]> } = {}) {
  const log: Array<{ kind: "one" | "many"; keys: string[] }> = [];
  const gates: Array<() => void> = [];
  const gate = () => new Promise<void>((res) => gates.push(res));
  const b = new Batcher<Call, number>({
    maxInFlight: opts.maxInFlight ?? 1,
    maxSize: opts.maxSize ?? 64,
    key: (c) => c.key,
    async runOne(c) {
      log.push({ kind: "one", keys: [c.key] });
      await gate();
      if (c.value < 0) throw new Error(`bad ${c.key}`);
      return c.value * 10;
    },
    async runMany(cs) {
      log.push({ kind: "many", keys: cs.map((c) => c.key) });
      await gate();
      return opts.many ? opts.many(cs) : cs.map((c) => c.value * 100);
    },
  });
  /** Opens every statement waiting so far and lets the batcher move on. */
  const flush = async () => {
    for (let i = 0; i < 50; i++) {
      while (gates.length) gates.shift()!();
      await new Promise((res) => setImmediate(res));
    }
  };
  return { b, log, flush };
}

describe("Batcher", () => {
  it("runs a lone call at once through the single-row path", async () => {
    const { b, log, flush } = harness();
    const p = b.run({ key: "a", value: 1 });
    expect(log).toEqual([{ kind: "one", keys: ["a"] }]);
    await flush();
    expect(await p).toBe(10);
  });

  it("coalesces calls that arrive while a statement is in flight, in arrival order", async () => {
    const { b, log, flush } = harness();
    const first = b.run({ key: "a", value: 1 });
    const rest = ["b", "c", "d"].map((key, i) => b.run({ key, value: i + 2 }));
    expect(b.waiting).toBe(3);
    await flush();
    expect(await first).toBe(10);
    expect(await Promise.all(rest)).toEqual([200, 300, 400]);
    expect(log).toEqual([
      { kind: "one", keys: ["a"] },
      { kind: "many", keys: ["b", "c", "d"] },
    ]);
  });

  it("never puts two calls with the same key in one statement, and keeps their order", async () => {
    const { b, log, flush } = harness();
    const calls = [
      b.run({ key: "a", value: 1 }),
      b.run({ key: "x", value: 2 }),
      b.run({ key: "x", value: 3 }),
      b.run({ key: "y", value: 4 }),
      b.run({ key: "x", value: 5 }),
    ];
    await flush();
    // The second and third "x" wait for later statements (alone, as nothing else is queued by then).
    expect(await Promise.all(calls)).toEqual([10, 200, 30, 400, 50]);
    expect(log).toEqual([
      { kind: "one", keys: ["a"] },
      { kind: "many", keys: ["x", "y"] },
      { kind: "one", keys: ["x"] },
      { kind: "one", keys: ["x"] },
    ]);
  });

  it("takes at most maxSize calls per statement and keeps maxInFlight statements running", async () => {
    const { b, log, flush } = harness({ maxInFlight: 2, maxSize: 2 });
    const calls = ["a", "b", "c", "d", "e", "f"].map((key, i) => b.run({ key, value: i }));
    // Two slots: "a" and "b" start alone at once; the rest wait.
    expect(log).toEqual([
      { kind: "one", keys: ["a"] },
      { kind: "one", keys: ["b"] },
    ]);
    await flush();
    await Promise.all(calls);
    expect(log.slice(2)).toEqual([
      { kind: "many", keys: ["c", "d"] },
      { kind: "many", keys: ["e", "f"] },
    ]);
  });

  it("runs every call of a failed statement alone, each meeting its own outcome", async () => {
    const { b, log, flush } = harness({ many: () => Promise.reject(new Error("deadlock detected")) });
    const first = b.run({ key: "a", value: 1 });
    const ok = b.run({ key: "b", value: 2 });
    const bad = b.run({ key: "c", value: -1 }).then(
      () => "resolved",
      (err: Error) => err.message,
    );
    await flush();
    await first;
    expect(await ok).toBe(20);
    expect(await bad).toBe("bad c");
    expect(log.slice(1)).toEqual([
      { kind: "many", keys: ["b", "c"] },
      { kind: "one", keys: ["b"] },
      { kind: "one", keys: ["c"] },
    ]);
  });

  it("runs only the calls a statement left unsettled alone", async () => {
    const { b, log, flush } = harness({ many: async (cs) => cs.map((c) => (c.key === "c" ? undefined : c.value * 100)) });
    const calls = ["a", "b", "c", "d"].map((key, i) => b.run({ key, value: i + 1 }));
    await flush();
    expect(await Promise.all(calls)).toEqual([10, 200, 30, 400]);
    expect(log.slice(1)).toEqual([
      { kind: "many", keys: ["b", "c", "d"] },
      { kind: "one", keys: ["c"] },
    ]);
  });

  it("reports each statement's size", async () => {
    const sizes: number[] = [];
    const b = new Batcher<Call, number>({
      maxInFlight: 1,
      maxSize: 8,
      key: (c) => c.key,
      runOne: async (c) => c.value,
      runMany: async (cs) => cs.map((c) => c.value),
      onBatch: (n) => sizes.push(n),
    });
    await Promise.all(["a", "b", "c"].map((key, i) => b.run({ key, value: i })));
    expect(sizes).toEqual([1, 2]);
  });

  it("rejects settings that could never run anything", () => {
    expect(() => new Batcher<Call, number>({ maxInFlight: 0, maxSize: 1, key: () => "", runOne: async () => 0, runMany: async () => [] })).toThrow(/≥ 1/);
  });
});
