import { describe, expect, it } from "vitest";
import { interpretChunk, SseParser, upstreamErrorMessage } from "./sse.js";

function parseAll(pieces: string[]): string[] {
  const out: string[] = [];
  const p = new SseParser((d) => out.push(d));
  for (const piece of pieces) p.push(piece);
  p.end();
  return out;
}

describe("SseParser", () => {
  const stream = 'data: {"a":1}\n\ndata: {"b":2}\n\n: comment\n\ndata: [DONE]\n\n';

  it("splits events however the text is cut", () => {
    const expected = ['{"a":1}', '{"b":2}', "[DONE]"];
    expect(parseAll([stream])).toEqual(expected);
    for (let cut = 1; cut < stream.length; cut++) expect(parseAll([stream.slice(0, cut), stream.slice(cut)])).toEqual(expected);
    expect(parseAll(stream.split(""))).toEqual(expected);
  });

  it("handles CRLF and CR line ends, split anywhere", () => {
    const crlf = stream.replaceAll("\n", "\r\n");
    for (let cut = 1; cut < crlf.length; cut++) expect(parseAll([crlf.slice(0, cut), crlf.slice(cut)])).toEqual(['{"a":1}', '{"b":2}', "[DONE]"]);
    expect(parseAll([stream.replaceAll("\n", "\r")])).toEqual(['{"a":1}', '{"b":2}', "[DONE]"]);
  });

  it("joins multi-line data and ignores other fields", () => {
    expect(parseAll(["event: x\nid: 1\ndata: one\ndata:two\n\n"])).toEqual(["one\ntwo"]);
  });

  it("flushes an event the stream ended without a blank line for", () => {
    expect(parseAll(["data: last"])).toEqual(["last"]);
  });

  it("never throws on random input", () => {
    for (let i = 0; i < 200; i++) {
      const s = Array.from({ length: 50 }, () => String.fromCharCode(Math.floor(Math.random() * 128))).join("");
      expect(() => parseAll([s])).not.toThrow();
    }
  });
});

describe("interpretChunk", () => {
  it("reads content, finish reason and usage", () => {
    expect(interpretChunk('{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}')).toEqual({ kind: "chunk", content: "Hi", finishReason: undefined, usage: undefined });
    expect(interpretChunk('{"choices":[{"delta":{},"finish_reason":"length"}]}')).toMatchObject({ finishReason: "length", content: undefined });
    expect(interpretChunk('{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}')).toMatchObject({ usage: { promptTokens: 5, completionTokens: 7 } });
    expect(interpretChunk('{"choices":[{"delta":{"role":"assistant","content":""}}]}')).toMatchObject({ content: undefined });
  });

  it("recognises the mid-stream error forms and [DONE]", () => {
    expect(interpretChunk('{"error":{"message":"boom","type":"InternalServerError"}}')).toEqual({ kind: "error", message: "boom" });
    expect(interpretChunk('{"object":"error","message":"old style"}')).toEqual({ kind: "error", message: "old style" });
    expect(interpretChunk("[DONE]")).toEqual({ kind: "done" });
  });

  it("rejects what is not a JSON object, and never throws", () => {
    expect(interpretChunk("{not json").kind).toBe("invalid");
    expect(interpretChunk("[1,2]").kind).toBe("invalid");
    expect(interpretChunk('{"choices":[null],"usage":{"prompt_tokens":"x"}}')).toMatchObject({ kind: "chunk", usage: undefined });
  });
});

describe("upstreamErrorMessage", () => {
  it("reads vLLM, FastAPI and plain bodies", () => {
    expect(upstreamErrorMessage('{"error":{"message":"This model\'s maximum context length is 10 tokens"}}')).toContain("maximum context length");
    expect(upstreamErrorMessage('{"error":"Unauthorized"}')).toBe("Unauthorized");
    expect(upstreamErrorMessage('{"detail":"Not Found"}')).toBe("Not Found");
    expect(upstreamErrorMessage("oops")).toBe("oops");
  });
});
