import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodePageToken, encodePageToken, pageSize } from "./page-token.js";

describe("page tokens", () => {
  it("round-trips", () => {
    const c = { createdAt: new Date(1_700_000_000_123), id: "0190a6c4-1234-4abc-8def-0123456789ab" };
    expect(decodePageToken(encodePageToken(c))).toEqual(c);
    expect(decodePageToken("")).toBeUndefined();
  });

  it("rejects anything else with a message, never crashes", () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => {
      try {
        const c = decodePageToken(s);
        if (c) expect(encodePageToken(c)).toBeTruthy();
      } catch (err) {
        expect((err as Error).message).toBe("is not a page token this service issued");
      }
    }));
  });

  it("sizes pages", () => {
    expect(pageSize(0, 20, 100)).toBe(20);
    expect(pageSize(7, 20, 100)).toBe(7);
    expect(pageSize(1000, 20, 100)).toBe(100);
    expect(() => pageSize(-1, 20, 100)).toThrow(/negative/);
  });
});
