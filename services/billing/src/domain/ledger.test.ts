import { describe, expect, it } from "vitest";
import { BillingError } from "./errors.js";
import {
  checkAnyAccountId,
  checkIdempotencyKey,
  checkNonNegativeAmount,
  checkPositiveAmount,
  checkReasonLabel,
  checkText,
  checkUsage,
  checkUserAccountId,
  checkUuid,
  describeCharge,
  fingerprint,
  grantFingerprint,
  MAX_AMOUNT,
} from "./ledger.js";

function fieldError(fn: () => unknown): { field?: string; message: string } {
  try {
    fn();
  } catch (err) {
    if (err instanceof BillingError && err.kind === "invalid_argument") return { field: err.field, message: err.message };
    throw err;
  }
  throw new Error("expected an invalid_argument error");
}

describe("validation", () => {
  it("account ids: user ids only, never a system account name", () => {
    expect(checkUserAccountId("account_id", "0b6f8a9e-3c1d-4c51-9d0a-1b2c3d4e5f60")).toBe("0b6f8a9e-3c1d-4c51-9d0a-1b2c3d4e5f60");
    expect(fieldError(() => checkUserAccountId("account_id", ""))).toEqual({ field: "account_id", message: "is required" });
    for (const bad of ["system:grants", "../etc/passwd", "a b", "-leading", "x".repeat(129), "üser"]) {
      expect(fieldError(() => checkUserAccountId("account_id", bad)).field).toBe("account_id");
    }
    expect(checkAnyAccountId("account_id", "system:revenue")).toBe("system:revenue");
    expect(fieldError(() => checkAnyAccountId("account_id", "system:other")).field).toBe("account_id");
  });

  it("amounts: positive (or non-negative for commits) and bounded", () => {
    expect(checkPositiveAmount("amount", 1n)).toBe(1n);
    expect(fieldError(() => checkPositiveAmount("amount", 0n)).message).toBe("must be greater than 0 (got 0)");
    expect(fieldError(() => checkPositiveAmount("amount", -5n)).message).toBe("must be greater than 0 (got -5)");
    expect(fieldError(() => checkPositiveAmount("amount", MAX_AMOUNT + 1n)).message).toMatch(/at most/);
    expect(checkNonNegativeAmount("amount", 0n)).toBe(0n);
    expect(fieldError(() => checkNonNegativeAmount("amount", -1n)).message).toBe("must not be negative (got -1)");
  });

  it("idempotency keys, labels, text and uuids", () => {
    expect(fieldError(() => checkIdempotencyKey("idempotency_key", "")).message).toBe("is required");
    expect(fieldError(() => checkIdempotencyKey("idempotency_key", "k".repeat(201))).message).toMatch(/at most 200/);
    expect(fieldError(() => checkIdempotencyKey("idempotency_key", "tab\there")).message).toBe("must be printable ASCII");
    expect(checkReasonLabel("reason", "chat")).toBe("chat");
    expect(fieldError(() => checkReasonLabel("reason", "Chat!")).field).toBe("reason");
    expect(checkText("reference", "", { required: false, max: 10 })).toBe("");
    expect(fieldError(() => checkText("reason", "", { required: true, max: 10 })).message).toBe("is required");
    expect(fieldError(() => checkText("reason", "a\u0000b", { required: true, max: 10 })).message).toMatch(/control characters/);
    expect(checkUuid("hold_id", "0B6F8A9E-3C1D-4C51-9D0A-1B2C3D4E5F60")).toBe("0b6f8a9e-3c1d-4c51-9d0a-1b2c3d4e5f60");
    expect(fieldError(() => checkUuid("hold_id", "123")).message).toBe("must be a UUID");
  });

  it("usage details", () => {
    const ok = { model: "llama-3.1-8b", feature: "chat", inputTokens: 1n, outputTokens: 2n, images: 0 };
    expect(checkUsage("usage", ok)).toBe(ok);
    expect(checkUsage("usage", undefined)).toBeUndefined();
    expect(fieldError(() => checkUsage("usage", { ...ok, inputTokens: -1n })).field).toBe("usage.input_tokens");
    expect(fieldError(() => checkUsage("usage", { ...ok, outputTokens: 10n ** 12n })).field).toBe("usage.output_tokens");
    expect(fieldError(() => checkUsage("usage", { ...ok, images: -2 })).field).toBe("usage.images");
    expect(fieldError(() => checkUsage("usage", { ...ok, model: "../../x y" })).field).toBe("usage.model");
  });
});

describe("fingerprints", () => {
  const base = { accountId: "u1", amount: 10n, reason: "signup", idempotencyKey: "k" };
  it("depend on what is asked, not on the key", () => {
    expect(grantFingerprint(base)).toBe(grantFingerprint({ ...base, idempotencyKey: "other" }));
    for (const change of [{ amount: 11n }, { reason: "promo" }, { accountId: "u2" }]) {
      expect(grantFingerprint({ ...base, ...change })).not.toBe(grantFingerprint(base));
    }
  });
  it("cannot be confused by separators inside values", () => {
    expect(fingerprint({ a: "x", b: "y&a=z" })).not.toBe(fingerprint({ a: "x&b=y", b: "z" }));
  });
});

describe("describeCharge", () => {
  it("summarises what was used", () => {
    expect(describeCharge("chat", { model: "llama", feature: "chat", inputTokens: 120n, outputTokens: 340n, images: 0 })).toBe(
      "chat · llama · 120 in / 340 out tokens",
    );
    expect(describeCharge("image", { model: "flux", feature: "", inputTokens: 0n, outputTokens: 0n, images: 1 })).toBe("image · flux · 1 image");
    expect(describeCharge("chat", undefined)).toBe("chat");
  });
});
