import { describe, expect, it } from "vitest";
import { normalizeEmail } from "./email.js";

describe("normalizeEmail", () => {
  it("trims and lower-cases the whole address, keeping dots and +tags", () => {
    expect(normalizeEmail("  Ann.Lee+Luna@Example.COM \n")).toEqual({ ok: true, email: "ann.lee+luna@example.com" });
  });
  it("applies NFC so composed and decomposed spellings are one account", () => {
    const decomposed = "jose\u0301@example.com";
    const composed = "jos\u00e9@example.com";
    expect(normalizeEmail(decomposed)).toEqual(normalizeEmail(composed));
  });
  it.each([
    ["", "is required"],
    ["   ", "is required"],
    ["no-at-sign", "not a valid"],
    ["a@b", "not a valid"],
    ["a@@b.io", "not a valid"],
    ["a b@c.io", "not a valid"],
    ["a@b..io", "not a valid"],
    ["a@.b.io", "not a valid"],
    ["a\u0000@b.io", "not a valid"],
    [`${"x".repeat(65)}@b.io`, "local part"],
    [`a@${"b".repeat(250)}.io`, "at most 254"],
  ])("refuses %j", (input, reason) => {
    const r = normalizeEmail(input);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toContain(reason);
  });
});
