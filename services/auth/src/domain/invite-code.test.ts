import { describe, expect, it } from "vitest";
import { canonicalInviteCode, generateInviteCode, hashInviteCode, INVITE_ALPHABET, INVITE_CODE_BITS, inviteCodeHint } from "./invite-code.js";

describe("invite codes", () => {
  it("carry at least 80 random bits in a human-friendly alphabet, grouped by five", () => {
    expect(INVITE_CODE_BITS).toBeGreaterThanOrEqual(80);
    const code = generateInviteCode();
    expect(code).toMatch(/^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){3}$/);
    expect(INVITE_ALPHABET).not.toMatch(/[ILOU]/);
  });
  it("are distinct and use the whole alphabet", () => {
    const codes = new Set(Array.from({ length: 2000 }, generateInviteCode));
    expect(codes.size).toBe(2000);
    const seen = new Set([...codes].join("").replace(/-/g, ""));
    expect(seen.size).toBe(32);
  });
  it("accept sloppy input: case, spaces, dashes and look-alikes", () => {
    const code = "7KQ2M-XD9RT-0A1BC-DEFGH";
    const canonical = canonicalInviteCode(code);
    expect(canonical).toBe("7KQ2MXD9RT0A1BCDEFGH");
    expect(canonicalInviteCode(" 7kq2m xd9rt oa1bc-defgh ")).toBe(canonical);
    expect(canonicalInviteCode("7kq2mxd9rtOAlbcdefgh")).toBe(canonical);
  });
  it("reject wrong length and foreign symbols", () => {
    expect(canonicalInviteCode("")).toBeUndefined();
    expect(canonicalInviteCode("7KQ2M-XD9RT")).toBeUndefined();
    expect(canonicalInviteCode("7KQ2M-XD9RT-0A1BC-DEFGU")).toBeUndefined();
    expect(canonicalInviteCode("7KQ2M-XD9RT-0A1BC-DEF'; DROP")).toBeUndefined();
  });
  it("hash to a stable hex digest and a short hint", () => {
    expect(hashInviteCode("7KQ2MXD9RT0A1BCDEFGH")).toMatch(/^[0-9a-f]{64}$/);
    expect(hashInviteCode("7KQ2MXD9RT0A1BCDEFGH")).toBe(hashInviteCode("7KQ2MXD9RT0A1BCDEFGH"));
    expect(inviteCodeHint("7KQ2MXD9RT0A1BCDEFGH")).toBe("7KQ2");
  });
});
