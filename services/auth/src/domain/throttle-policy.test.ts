import { describe, expect, it } from "vitest";
import { progressiveDelayMs, type SignInThrottlePolicy } from "./throttle-policy.js";

const p: SignInThrottlePolicy = { maxFailuresPerHour: 100, freeFailures: 5, baseDelayMs: 1000, maxDelayMs: 60_000, ipMaxFailures: 300, ipWindowMs: 3_600_000 };

describe("progressiveDelayMs", () => {
  it("is free for the first failures, then doubles up to the cap", () => {
    expect([0, 4, 5, 6, 7, 10, 11, 50, 10_000].map((n) => progressiveDelayMs(n, p))).toEqual([0, 0, 1000, 2000, 4000, 32_000, 60_000, 60_000, 60_000]);
  });
});
