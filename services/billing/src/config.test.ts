import { ConfigError, loadConfig } from "@luna/kit";
import { describe, expect, it } from "vitest";
import { billingConfigSchema } from "./config.js";
import { DEFAULT_LIMIT_POLICY } from "./limits/policy.js";

describe("billing config", () => {
  it("has documented defaults", () => {
    const c = loadConfig(billingConfigSchema, {});
    expect(c).toMatchObject({
      BILLING_SIGNUP_CREDITS: 1000,
      BILLING_HOLD_DEFAULT_TTL: 600_000,
      BILLING_HOLD_MAX_TTL: 7_200_000,
      BILLING_SWEEP_INTERVAL: 5_000,
      BILLING_SWEEP_BATCH: 500,
      BILLING_INVARIANT_CHECK_INTERVAL: 300_000,
      BILLING_DB_POOL_SIZE: 20,
      BILLING_CONSUME_USER_EVENTS: true,
      BILLING_RATELIMIT_DOMAIN: "luna",
    });
    expect(c.BILLING_RATE_LIMITS).toBe(DEFAULT_LIMIT_POLICY);
  });

  it("reads overrides, including the limits policy", () => {
    const c = loadConfig(billingConfigSchema, {
      BILLING_SIGNUP_CREDITS: "250",
      BILLING_SWEEP_INTERVAL: "250ms",
      BILLING_RATE_LIMITS: '{"roles":{"user":{"concurrency":{"image_job":3}}}}',
    });
    expect(c.BILLING_SIGNUP_CREDITS).toBe(250);
    expect(c.BILLING_SWEEP_INTERVAL).toBe(250);
    expect(c.BILLING_RATE_LIMITS.roles.user!.concurrency.image_job).toBe(3);
  });

  it("names every bad variable", () => {
    try {
      loadConfig(billingConfigSchema, { BILLING_SIGNUP_CREDITS: "-1", BILLING_HOLD_MAX_TTL: "forever", BILLING_RATE_LIMITS: "{nope" });
      throw new Error("expected a ConfigError");
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const vars = (err as ConfigError).issues.map((i) => i.variable);
      expect(vars).toEqual(expect.arrayContaining(["BILLING_SIGNUP_CREDITS", "BILLING_HOLD_MAX_TTL", "BILLING_RATE_LIMITS"]));
    }
  });
});
