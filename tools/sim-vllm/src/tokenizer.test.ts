import { describe, expect, it } from "vitest";
import { ReplyGenerator, replySeed } from "./textgen.js";
import { countTokens, renderChatTemplate, tokenize, tokenizePieces } from "./tokenizer.js";

describe("tokenizer", () => {
  it("splits words with their leading space, punctuation, digits in threes and whitespace", () => {
    expect(tokenizePieces("Hello, world! It's 12345.")).toEqual(
      ["Hello", ",", " world", "!", " It", "'", "s", " 123", "45", "."]);
    expect(tokenizePieces("a  b\nc")).toEqual(["a", " ", " b", "\n", "c"]);
  });

  it("cuts long words into chunks so huge inputs count as many tokens", () => {
    expect(tokenizePieces("internationalization")).toEqual(["internatio", "nalization"]);
    expect(countTokens("x".repeat(10_000))).toBe(1_000);
  });

  it("keeps chat-template special tokens whole, even right after punctuation", () => {
    expect(tokenizePieces("Hi.<|im_end|>\n<|im_start|>")).toEqual(["Hi", ".", "<|im_end|>", "\n", "<|im_start|>"]);
    expect(tokenize("<|im_start|><|im_end|>")).toEqual([151644, 151645]);
  });

  it("never drops characters: pieces concatenate back to the input", () => {
    for (const text of ["<|im_foo <|im_end|>.", "émigré 日本語 🙂", "  leading and trailing  ", "=====...!!!"]) {
      expect(tokenizePieces(text).join("")).toBe(text);
    }
  });

  it("gives the same ids for the same text and counts consistently", () => {
    const text = "The quick brown fox jumps over the lazy dog.";
    expect(tokenize(text)).toEqual(tokenize(text));
    expect(countTokens(text)).toBe(tokenize(text).length);
    expect(new Set(tokenize("alpha beta gamma")).size).toBe(3);
  });

  it("renders ChatML and counts template tokens per message", () => {
    const one = renderChatTemplate([{ role: "user", content: "Hi there." }]);
    expect(one).toBe("<|im_start|>user\nHi there.<|im_end|>\n<|im_start|>assistant\n");
    // 5 template tokens per message + 3 for the generation prompt + the content's own tokens (3).
    expect(countTokens(one)).toBe(5 + 3 + 3);
    const two = renderChatTemplate([{ role: "system", content: "Be brief." }, { role: "user", content: "Hi there." }]);
    expect(countTokens(two)).toBe(countTokens(one) + 5 + 3);
    expect(countTokens(renderChatTemplate([{ role: "user", content: "Hi there." }], false))).toBe(8);
  });
});

describe("reply generator", () => {
  it("emits exactly one token per piece, so completion tokens equal the reply's token count", () => {
    for (let seed = 0; seed < 20; seed++) {
      const gen = new ReplyGenerator(seed);
      const pieces: string[] = [];
      for (let i = 0; i < 300; i++) pieces.push(gen.next().piece);
      const text = pieces.join("");
      expect(tokenizePieces(text)).toEqual(pieces);
    }
  });

  it("is deterministic per seed and reads like sentences", () => {
    const take = (seed: number, n: number) => {
      const g = new ReplyGenerator(seed);
      return Array.from({ length: n }, () => g.next().piece).join("");
    };
    expect(take(42, 50)).toBe(take(42, 50));
    expect(take(42, 50)).not.toBe(take(43, 50));
    expect(take(7, 200)).toMatch(/^[A-Z][a-z]+( [a-z]+|,|[.!?]( [A-Z][a-z]+)?|\n\n[A-Z][a-z]+)+/);
  });

  it("marks sentence ends", () => {
    const g = new ReplyGenerator(1);
    let ends = 0;
    for (let i = 0; i < 200; i++) {
      const { piece, endsSentence } = g.next();
      expect(endsSentence).toBe([".", "!", "?"].includes(piece));
      if (endsSentence) ends++;
    }
    expect(ends).toBeGreaterThan(3);
  });

  it("derives reply seeds from model, prompt and request seed", () => {
    expect(replySeed("m", "p", 1)).toBe(replySeed("m", "p", 1));
    expect(replySeed("m", "p", 1)).not.toBe(replySeed("m", "p", 2));
    expect(replySeed("m", "p", 1)).not.toBe(replySeed("m", "q", 1));
    expect(replySeed("m", "p", 1)).not.toBe(replySeed("n", "p", 1));
  });
});
