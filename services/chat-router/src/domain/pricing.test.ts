import { describe, expect, it } from "vitest";
import { affordableOutputTokens, availableFromReserveError, replyCost } from "./pricing.js";

const prices = { inputPer1k: 10n, outputPer1k: 20n };

describe("replyCost", () => {
  it("rounds the total up once", () => {
    expect(replyCost(prices, 0, 0)).toBe(0n);
    expect(replyCost(prices, 1, 0)).toBe(1n); // 0.01 credits → 1
    expect(replyCost(prices, 100, 0)).toBe(1n);
    expect(replyCost(prices, 101, 0)).toBe(2n);
    expect(replyCost(prices, 50, 25)).toBe(1n); // 0.5 + 0.5 = 1 exactly
    expect(replyCost(prices, 1000, 1000)).toBe(30n);
  });
  it("is free with zero prices", () => {
    expect(replyCost({ inputPer1k: 0n, outputPer1k: 0n }, 5000, 5000)).toBe(0n);
  });
});

describe("affordableOutputTokens", () => {
  it("is the largest budget whose worst case fits the credits", () => {
    // 10 credits, 200 prompt tokens (2 credits) → 8 credits → 400 output tokens.
    const n = affordableOutputTokens(prices, 10n, 200, 4096);
    expect(n).toBe(400);
    expect(replyCost(prices, 200, n)).toBeLessThanOrEqual(10n);
    expect(replyCost(prices, 200, n + 1)).toBeGreaterThan(10n);
  });
  it("is capped, and negative when the prompt alone is unaffordable", () => {
    expect(affordableOutputTokens(prices, 1000n, 10, 50)).toBe(50);
    expect(affordableOutputTokens(prices, 1n, 200, 50)).toBe(-1);
    expect(affordableOutputTokens({ inputPer1k: 1n, outputPer1k: 0n }, 5n, 10, 77)).toBe(77);
  });
});

describe("availableFromReserveError", () => {
  it("reads billing's message", () => {
    expect(availableFromReserveError("insufficient credits: requested 50, available 7")).toBe(7n);
    expect(availableFromReserveError("something else")).toBeUndefined();
  });
});
