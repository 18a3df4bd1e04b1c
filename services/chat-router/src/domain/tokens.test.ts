import { describe, expect, it } from "vitest";
import { countTokens } from "@luna/sim-vllm";
import { estimateTokens, tokenUpperBound } from "./tokens.js";

describe("tokenUpperBound", () => {
  const samples = ["", "a", "1", " ", "Hello, world!", "héllo wörld", "数学は楽しい", "🙂🙃 emoji 🚀", "x".repeat(5000), "a b c d e f g h i j"];

  it("is never below a tokenizer's count or the estimate used without /tokenize", () => {
    for (const s of samples) {
      expect(tokenUpperBound(s)).toBeGreaterThanOrEqual(countTokens(s));
      expect(tokenUpperBound(s)).toBeGreaterThanOrEqual(estimateTokens(s, 1));
    }
  });

  it("counts UTF-8 bytes plus one word-start marker, and nothing for an empty text", () => {
    expect(tokenUpperBound("")).toBe(0);
    expect(tokenUpperBound("1")).toBe(2);
    expect(tokenUpperBound("héllo")).toBe(7);
    expect(tokenUpperBound("🙂")).toBe(5);
  });
});
