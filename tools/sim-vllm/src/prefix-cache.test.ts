import { describe, expect, it } from "vitest";
import { PrefixCache } from "./prefix-cache.js";

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe("PrefixCache", () => {
  it("hits the leading full blocks a previous prompt computed", () => {
    const cache = new PrefixCache(4, 100);
    const first = range(0, 10); // blocks [0..3], [4..7]; 2 tokens left over
    expect(cache.lookup(cache.blockHashes(first), first.length)).toBe(0);
    cache.insert(cache.blockHashes(first));
    const second = [...range(0, 8), 99, 98, 97, 96, 95];
    expect(cache.lookup(cache.blockHashes(second), second.length)).toBe(8);
  });

  it("keys blocks by everything before them, so a different start misses", () => {
    const cache = new PrefixCache(4, 100);
    cache.insert(cache.blockHashes(range(0, 8)));
    const other = [42, ...range(1, 7)];
    expect(cache.lookup(cache.blockHashes(other), other.length)).toBe(0);
  });

  it("recomputes the last block of a fully cached prompt", () => {
    const cache = new PrefixCache(4, 100);
    cache.insert(cache.blockHashes(range(0, 8)));
    expect(cache.lookup(cache.blockHashes(range(0, 8)), 8)).toBe(4);
  });

  it("evicts least recently used blocks beyond capacity", () => {
    const cache = new PrefixCache(2, 2);
    const a = [1, 2];
    const b = [3, 4];
    const c = [5, 6];
    cache.insert(cache.blockHashes(a));
    cache.insert(cache.blockHashes(b));
    expect(cache.lookup(cache.blockHashes([...a, 0]), 3)).toBe(2); // touches a: b is now oldest
    cache.insert(cache.blockHashes(c));
    expect(cache.size).toBe(2);
    expect(cache.lookup(cache.blockHashes([...b, 0]), 3)).toBe(0);
    expect(cache.lookup(cache.blockHashes([...a, 0]), 3)).toBe(2);
  });
});
