import { describe, expect, it } from "vitest";
import { loadCommonPasswords, passwordProblem, type PasswordPolicy } from "./password-policy.js";

const common = loadCommonPasswords();
const policy: PasswordPolicy = { minLength: 8, maxLength: 256, common };

describe("common password list", () => {
  it("ships at least 10,000 entries, lower-case, including the classics", () => {
    expect(common.size).toBeGreaterThanOrEqual(10_000);
    for (const p of ["password", "12345678", "qwertyuiop", "iloveyou", "trustno1", "baseball"]) expect(common.has(p)).toBe(true);
    for (const p of common) expect(p).toBe(p.toLowerCase());
  });
});

describe("passwordProblem", () => {
  it("accepts a long uncommon passphrase without composition rules", () => {
    expect(passwordProblem("correct horse battery staple", policy)).toBeUndefined();
    expect(passwordProblem("aaaaaaaaaaaaqzx", policy)).toBeUndefined();
  });
  it("refuses too short, too long and empty", () => {
    expect(passwordProblem("", policy)).toBe("is required");
    expect(passwordProblem("short7!", policy)).toContain("at least 8");
    expect(passwordProblem("x".repeat(257), policy)).toContain("at most 256");
    expect(passwordProblem("x".repeat(256) + "", policy)).toBeUndefined();
  });
  it("counts code points, not UTF-16 units", () => {
    expect(passwordProblem("🔑🔑🔑🔑🔑🔑🔑", policy)).toContain("at least 8"); // 7 emoji = 14 UTF-16 units
  });
  it("refuses common passwords case-insensitively", () => {
    expect(passwordProblem("Password1", policy)).toContain("most commonly used");
    expect(passwordProblem("QWERTYUIOP", policy)).toContain("most commonly used");
    expect(passwordProblem("football", policy)).toContain("most commonly used");
  });
});
