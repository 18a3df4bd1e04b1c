import { describe, expect, it } from "vitest";
import { chooseReplica, hash32 } from "./balancer.js";

const replicas = (n: number) => Array.from({ length: n }, (_, i) => ({ urlHash: hash32(`http://10.0.0.${i}:8000`), inflight: 0 }));

describe("chooseReplica", () => {
  it("is sticky: the same key picks the same replica", () => {
    const rs = replicas(4);
    const first = chooseReplica(rs, "conv-1", 4);
    for (let i = 0; i < 10; i++) expect(chooseReplica(rs, "conv-1", 4)).toBe(first);
  });

  it("spreads keys over replicas", () => {
    const rs = replicas(4);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) counts[chooseReplica(rs, `conv-${i}`, 4)]!++;
    for (const c of counts) expect(c).toBeGreaterThan(700);
  });

  it("moves only the keys of a removed replica (rendezvous)", () => {
    const rs = replicas(4);
    const before = Array.from({ length: 1000 }, (_, i) => rs[chooseReplica(rs, `k${i}`, 100)]!);
    const without = rs.slice(1);
    let moved = 0;
    for (let i = 0; i < 1000; i++) {
      const after = without[chooseReplica(without, `k${i}`, 100)]!;
      if (before[i] !== rs[0] && after !== before[i]) moved++;
    }
    expect(moved).toBe(0);
  });

  it("leaves the preferred replica when it is busier than the least loaded by more than the slack", () => {
    const rs = replicas(2);
    const preferred = chooseReplica(rs, "conv-x", 2);
    rs[preferred]!.inflight = 3;
    expect(chooseReplica(rs, "conv-x", 2)).toBe(1 - preferred);
    rs[preferred]!.inflight = 2;
    expect(chooseReplica(rs, "conv-x", 2)).toBe(preferred);
  });

  it("handles empty and single lists", () => {
    expect(chooseReplica([], "k", 1)).toBe(-1);
    expect(chooseReplica(replicas(1), "k", 1)).toBe(0);
  });
});
