import { describe, expect, it } from "vitest";
import { normalizeDisplayName } from "./display-name.js";

describe("normalizeDisplayName", () => {
  it("trims and accepts up to 64 code points (emoji count once)", () => {
    expect(normalizeDisplayName("  Ann  ")).toEqual({ ok: true, displayName: "Ann" });
    expect(normalizeDisplayName("😀".repeat(64)).ok).toBe(true);
    expect(normalizeDisplayName("😀".repeat(65)).ok).toBe(false);
  });
  it.each(["", "  ", "a\nb", "a\u0007", "evil\u202eexe", "zero\u200bwidth"])("refuses %j", (input) => {
    expect(normalizeDisplayName(input).ok).toBe(false);
  });
});
