import { describe, expect, it } from "vitest";
import { DEFAULT_LIMIT_POLICY, parseLimitPolicy, rateFor, rolePolicy } from "./policy.js";

describe("limit policy", () => {
  it("defaults: one image job per user, per-feature rates, the role's default for other features", () => {
    const p = parseLimitPolicy(undefined);
    expect(p).toBe(DEFAULT_LIMIT_POLICY);
    expect(rolePolicy(p, "user").concurrency.image_job).toBe(1);
    expect(rateFor(p, "user", "chat")).toEqual({ limit: 20, per: "minute" });
    expect(rateFor(p, "user", "something-else")).toEqual({ limit: 120, per: "minute" });
    expect(rateFor(p, "", "chat")).toEqual({ limit: 20, per: "minute" });
    expect(rateFor(p, "no-such-role", "chat")).toEqual({ limit: 20, per: "minute" });
  });

  it("merges overrides over the defaults", () => {
    const p = parseLimitPolicy('{"roles":{"user":{"rates":{"chat":{"limit":30,"per":"hour"}},"concurrency":{"image_job":2}},"vip":{"concurrency":{"chat_stream":9}}},"leaseTtlMs":{"chat_stream":5000}}');
    expect(rateFor(p, "user", "chat")).toEqual({ limit: 30, per: "hour" });
    expect(rateFor(p, "user", "image")).toEqual({ limit: 10, per: "minute" });
    expect(rolePolicy(p, "user").concurrency).toEqual({ chat_stream: 2, image_job: 2 });
    expect(rolePolicy(p, "vip").concurrency).toEqual({ chat_stream: 9, image_job: 1 });
    expect(p.leaseTtlMs).toEqual({ chat_stream: 5000, image_job: 1_800_000 });
    // the defaults object is not modified
    expect(rateFor(DEFAULT_LIMIT_POLICY, "user", "chat")).toEqual({ limit: 20, per: "minute" });
  });

  it("rejects malformed policies with a readable reason", () => {
    expect(() => parseLimitPolicy("{")).toThrow("must be a JSON object");
    expect(() => parseLimitPolicy('{"roles":{"user":{"rates":{"chat":{"limit":-1,"per":"minute"}}}}}')).toThrow(/roles\.user\.rates\.chat\.limit/);
    expect(() => parseLimitPolicy('{"roles":{"user":{"rates":{"chat":{"limit":1,"per":"week"}}}}}')).toThrow(/per/);
    expect(() => parseLimitPolicy('{"defaultRole":"ghost"}')).toThrow(/no role named "ghost"/);
    expect(() => parseLimitPolicy('{"unknown":1}')).toThrow();
  });
});
