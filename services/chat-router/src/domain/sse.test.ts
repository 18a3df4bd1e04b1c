import { describe, expect, it, vi } from "vitest";
import { fastChunkContent, interpretChunk, SseParser, upstreamErrorMessage } from "./sse.js";

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

describe("interpretChunk's fast path (the usual token chunk without JSON.parse)", () => {
  const vllm = (content: string, tail = ',"logprobs":null,"finish_reason":null}]}') =>
    `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":${JSON.stringify(content)}}${tail}`;

  it("reads vLLM's and OpenAI's token chunks without JSON.parse", () => {
    const parse = vi.spyOn(JSON, "parse");
    try {
      expect(interpretChunk(vllm("Hello"))).toEqual({ kind: "chunk", content: "Hello", finishReason: undefined, usage: undefined });
      expect(interpretChunk(vllm(" wörld 😀", ',"logprobs":null,"finish_reason":null,"stop_reason":null}]}'))).toMatchObject({ content: " wörld 😀" });
      const openai = '{"id":"chatcmpl-2","object":"chat.completion.chunk","created":2,"model":"gpt-4o","system_fingerprint":"fp_1",'
        + '"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}';
      expect(interpretChunk(openai)).toMatchObject({ kind: "chunk", content: "Hi" });
      expect(parse).not.toHaveBeenCalled();
      expect(fastChunkContent(vllm('say "hi"\n'))).toBe('say "hi"\n'); // escapes: only the string literal is parsed
    } finally {
      parse.mockRestore();
    }
  });

  it("leaves every other chunk to JSON.parse", () => {
    expect(fastChunkContent(vllm("x", ',"logprobs":null,"finish_reason":"stop"}]}'))).toBeUndefined();
    expect(fastChunkContent(vllm("x", ',"finish_reason":null}],"usage":{"prompt_tokens":1,"completion_tokens":2}}'))).toBeUndefined();
    expect(fastChunkContent(vllm("x", ',"tool_calls":[]},"finish_reason":null}]}'))).toBeUndefined();
    expect(fastChunkContent(vllm("x", ',"finish_reason":null},{"index":1,"delta":{}}]}'))).toBeUndefined();
    expect(fastChunkContent('{"usage":{"prompt_tokens":1},"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}')).toBeUndefined();
    expect(fastChunkContent('{"error":{"message":"boom"},"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}')).toBeUndefined();
    expect(interpretChunk(vllm("x", ',"logprobs":null,"finish_reason":"length"}]}'))).toMatchObject({ content: "x", finishReason: "length" });
  });

  it("gives what JSON.parse gives, whatever the content, fields and ends", () => {
    // The reference: the same data with a leading space, which JSON.parse accepts and the fast path never takes.
    const same = (d: string) => {
      const [got, want] = [interpretChunk(d), interpretChunk(` ${d}`)];
      if (want.kind === "invalid") expect(got.kind, d).toBe("invalid"); // its reason quotes the data
      else expect(got, d).toEqual(want);
    };
    const alphabet = ['"', "\\", "{", "}", "[", "]", ",", ":", "a", "é", "😀", "\n", "\u0001", " ", "null", "usage", '"finish_reason":"stop"', '"},{"'];
    const tails = [",\"logprobs\":null,\"finish_reason\":null}]}", ",\"finish_reason\":null,\"logprobs\":null,\"stop_reason\":null}]}", "}]}", ",\"finish_reason\":\"stop\"}]}",
      ",\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}", ",\"finish_reason\":null}]", ",\"finish_reason\":null}]}}", ",\"finish_reason\":nul}]}"];
    let seed = 23;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    for (let i = 0; i < 3000; i++) {
      const content = Array.from({ length: rnd(6) }, () => alphabet[rnd(alphabet.length)]).join("");
      const model = rnd(4) === 0 ? '"usage\\"error"' : '"m"';
      same(`{"id":"c","model":${model},"choices":[{"index":0,"delta":{"content":${JSON.stringify(content)}}${tails[rnd(tails.length)]}`);
    }
    // Hand-broken literals: raw control characters, a dangling escape, an unterminated string.
    for (const d of ['{"choices":[{"index":0,"delta":{"content":"a\nb"},"finish_reason":null}]}', '{"choices":[{"index":0,"delta":{"content":"a\\'
      , '{"choices":[{"index":0,"delta":{"content":"a', '{"choices":[{"index":0,"delta":{"content":"\\x"},"finish_reason":null}]}']) same(d);
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
