import { describe, expect, it } from "vitest";
import { decodePageToken, encodePageToken, pageSize } from "./page-token.js";

describe("page tokens", () => {
  it("round-trip", () => {
    const c = { createdAt: new Date("2026-01-02T03:04:05.678Z"), id: "0b7e8a5e-8f35-4a8e-9a57-2f1f4b0c3d11" };
    expect(decodePageToken(encodePageToken(c))).toEqual(c);
  });
  it("reject tokens they did not make", () => {
    for (const t of ["", "x", Buffer.from("{}").toString("base64url"), Buffer.from('{"t":"no","id":"1"}').toString("base64url"), "a".repeat(500)]) {
      expect(decodePageToken(t)).toBeUndefined();
    }
  });
  it("default and clamp sizes", () => {
    expect([pageSize(0), pageSize(10), pageSize(10_000)]).toEqual([50, 10, 200]);
  });
});
