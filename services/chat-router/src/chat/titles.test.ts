import { describe, expect, it } from "vitest";
import { cleanTitle } from "./titles.js";

describe("cleanTitle", () => {
  it("keeps the first line, without quotes, prefixes, markdown or a trailing period", () => {
    expect(cleanTitle('"Trip to Lisbon"')).toBe("Trip to Lisbon");
    expect(cleanTitle("Title: Baking sourdough bread.\nHope this helps!")).toBe("Baking sourdough bread");
    expect(cleanTitle("**Rust lifetimes explained**")).toBe("Rust lifetimes explained");
    expect(cleanTitle("<think>the user asks about cats</think>\nCats and their habits")).toBe("Cats and their habits");
    expect(cleanTitle("\n\n  spaced    out   title  ")).toBe("spaced out title");
  });

  it("shortens long answers and gives up on empty ones", () => {
    const t = cleanTitle("word ".repeat(50));
    expect(t.length).toBeLessThanOrEqual(80);
    expect(t.endsWith("…")).toBe(true);
    expect(cleanTitle('  ""  ')).toBe("");
  });
});
