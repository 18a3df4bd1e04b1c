import { describe, expect, it } from "vitest";
import { generateRefreshToken, hashRefreshToken, looksLikeRefreshToken } from "./refresh-token.js";

describe("refresh tokens", () => {
  it("are prefixed, 256-bit and distinct", () => {
    const t = generateRefreshToken();
    expect(t).toMatch(/^luna_rt_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(t.slice(8), "base64url")).toHaveLength(32);
    expect(generateRefreshToken()).not.toBe(t);
    expect(looksLikeRefreshToken(t)).toBe(true);
  });
  it("reject other shapes before any look-up", () => {
    expect(looksLikeRefreshToken("")).toBe(false);
    expect(looksLikeRefreshToken("eyJhbGciOiJFZERTQSJ9.e30.sig")).toBe(false);
    expect(looksLikeRefreshToken("luna_rt_short")).toBe(false);
  });
  it("hash with SHA-256", () => {
    expect(hashRefreshToken("luna_rt_x")).toMatch(/^[0-9a-f]{64}$/);
  });
});
