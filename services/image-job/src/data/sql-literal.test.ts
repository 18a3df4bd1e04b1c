// The literals of statements sent in the simple protocol (the submit's insert travels with its COMMIT).
import { describe, expect, it } from "vitest";
import { inlineParams, sqlLiteral } from "./job-store.js";

describe("sqlLiteral / inlineParams", () => {
  it("quotes strings, keeps integers and bigints, writes dates in ISO form and bytes as hex", () => {
    expect(sqlLiteral("it's")).toBe("'it''s'");
    expect(sqlLiteral("back\\slash")).toBe(" E'back\\\\slash'");
    expect(sqlLiteral(42)).toBe("42");
    expect(sqlLiteral(-7n)).toBe("-7");
    expect(sqlLiteral(true)).toBe("true");
    expect(sqlLiteral(null)).toBe("NULL");
    expect(sqlLiteral(new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)))).toBe("'2026-01-02T03:04:05.006Z'");
    expect(sqlLiteral(Buffer.from([0, 255, 16]))).toBe("decode('00ff10', 'hex')");
    expect(sqlLiteral(new Uint8Array([1, 2, 3]).subarray(1))).toBe("decode('0203', 'hex')");
  });

  it("refuses what it cannot write safely", () => {
    expect(() => sqlLiteral(1.5)).toThrow(/not an integer/);
    expect(() => sqlLiteral(Number.NaN)).toThrow(/not an integer/);
    expect(() => sqlLiteral(new Date(Number.NaN))).toThrow(/invalid date/);
    expect(() => sqlLiteral({})).toThrow(/unsupported/);
    expect(() => inlineParams("SELECT $1, $2", ["a"])).toThrow(/no value for \$2/);
  });

  it("replaces each placeholder once, never reading placeholders inside the values", () => {
    expect(inlineParams("INSERT INTO t VALUES ($1, $2::uuid, $10)", ["$2 and $10", "0b5d8f55-0000-4000-8000-000000000000", 1, 2, 3, 4, 5, 6, 7, 8]))
      .toBe("INSERT INTO t VALUES ('$2 and $10', '0b5d8f55-0000-4000-8000-000000000000'::uuid, 8)");
  });
});
