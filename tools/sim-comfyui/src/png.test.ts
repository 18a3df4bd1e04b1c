import { describe, expect, it } from "vitest";
import { decodePng } from "../test/helpers.js";
import { PNG_SIGNATURE, encodePng, renderPng, renderRaw } from "./png.js";

describe("png", () => {
  it("encodes a valid 8-bit RGB PNG of the requested size, with tEXt chunks", () => {
    const png = renderPng("key", 300, 17, { text: { prompt: '{"3": "ünïcode"}' } });
    expect(png.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
    const decoded = decodePng(png);
    expect([decoded.width, decoded.height]).toEqual([300, 17]);
    expect(decoded.text.prompt).toBe('{"3": "\\u00fcn\\u00efcode"}');
  });

  it("is deterministic in its key and size, and different keys give different pictures", () => {
    expect(renderPng("a cat|42", 64, 48).equals(renderPng("a cat|42", 64, 48))).toBe(true);
    expect(renderRaw("a cat|42", 64, 48).equals(renderRaw("a cat|43", 64, 48))).toBe(false);
    expect(renderRaw("a cat|42", 64, 48).equals(renderRaw("a dog|42", 64, 48))).toBe(false);
  });

  it("progress 0 is flat grey and progress 1 is the full picture", () => {
    const grey = decodePng(renderPng("k", 8, 8, { progress: 0 })).raw;
    for (let y = 0; y < 8; y++) {
      expect(grey[y * 25]).toBe(0); // filter byte
      expect([...grey.subarray(y * 25 + 1, y * 25 + 25)].every((b) => b === 128)).toBe(true);
    }
    expect(decodePng(renderPng("k", 8, 8, { progress: 1 })).raw.equals(renderRaw("k", 8, 8))).toBe(true);
  });

  it("handles 1×1 and very wide or tall images", () => {
    expect(decodePng(renderPng("k", 1, 1))).toMatchObject({ width: 1, height: 1 });
    expect(decodePng(renderPng("k", 4000, 2))).toMatchObject({ width: 4000, height: 2 });
    expect(decodePng(renderPng("k", 2, 4000))).toMatchObject({ width: 2, height: 4000 });
  });

  it("encodes 1024×1024 (the cost is deflate, not per-pixel work)", () => {
    const png = renderPng("large", 1024, 1024);
    expect(decodePng(png)).toMatchObject({ width: 1024, height: 1024 });
  });

  it("rejects impossible sizes and mismatched scanline data", () => {
    expect(() => encodePng(0, 10, Buffer.alloc(0))).toThrow(RangeError);
    expect(() => encodePng(2, 2, Buffer.alloc(3))).toThrow(RangeError);
  });
});
