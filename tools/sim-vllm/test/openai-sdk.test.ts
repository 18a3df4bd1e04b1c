/**
 * Protocol fidelity, judged by the official OpenAI SDK: if the SDK parses our streams, objects and errors into the
 * right types, clients written against vLLM will too.
 */
import OpenAI, { type APIError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type VllmSim, startVllmSim } from "../src/index.js";
import { post } from "./helpers.js";

let sim: VllmSim;
let client: OpenAI;
const MODEL = "test-model";
const SMALL = "small-model";
const messages = [
  { role: "system" as const, content: "You are terse." },
  { role: "user" as const, content: "Tell me about rivers." },
];

beforeAll(async () => {
  sim = await startVllmSim({ models: [`${MODEL}:4096`, `${SMALL}:64`], profile: "zero" });
  client = new OpenAI({ baseURL: sim.baseURL, apiKey: "unused", maxRetries: 0 });
});
afterAll(() => sim.close());

async function tokenCount(body: Record<string, unknown>): Promise<number> {
  const res = await post(`${sim.url}/tokenize`, { model: MODEL, ...body });
  expect(res.status).toBe(200);
  return (JSON.parse(res.body) as { count: number }).count;
}

/** Streams a chat completion and gathers what a client sees. */
async function streamChat(params: Omit<OpenAI.ChatCompletionCreateParamsStreaming, "stream">) {
  const stream = await client.chat.completions.create({ ...params, stream: true,
    stream_options: { include_usage: true } });
  const chunks: OpenAI.ChatCompletionChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  const content = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? "")).join("");
  const finish = chunks.flatMap((c) => c.choices).find((ch) => ch.finish_reason)?.finish_reason;
  return { chunks, content, finish, usage: chunks.at(-1)?.usage };
}

describe("chat completions through the OpenAI SDK", () => {
  it("streams a role chunk, content deltas, a finish reason and a final usage chunk", async () => {
    const { chunks, content, finish, usage } = await streamChat({ model: MODEL, messages, seed: 7 });
    expect(chunks[0]!.object).toBe("chat.completion.chunk");
    expect(chunks[0]!.choices[0]!.delta.role).toBe("assistant");
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks.every((c) => c.model === MODEL)).toBe(true);
    expect(content.length).toBeGreaterThan(0);
    expect(finish).toBe("stop");
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(usage).toBeDefined();
    expect(usage!.prompt_tokens).toBe(await tokenCount({ messages }));
    expect(usage!.completion_tokens).toBe(await tokenCount({ prompt: content }));
    expect(usage!.total_tokens).toBe(usage!.prompt_tokens + usage!.completion_tokens);
  });

  it("streams exactly what the non-streamed call returns for the same seed", async () => {
    const streamed = await streamChat({ model: MODEL, messages, seed: 1234, temperature: 0.8 });
    const whole = await client.chat.completions.create({ model: MODEL, messages, seed: 1234, temperature: 0.8 });
    expect(whole.object).toBe("chat.completion");
    expect(whole.choices[0]!.message.role).toBe("assistant");
    expect(whole.choices[0]!.message.content).toBe(streamed.content);
    expect(whole.choices[0]!.finish_reason).toBe(streamed.finish);
    expect(whole.usage).toMatchObject({ prompt_tokens: streamed.usage!.prompt_tokens,
      completion_tokens: streamed.usage!.completion_tokens, total_tokens: streamed.usage!.total_tokens });
  });

  it("ends a natural reply at a sentence end with finish_reason stop", async () => {
    const r = await client.chat.completions.create({ model: MODEL, messages, seed: 99 });
    expect(r.choices[0]!.finish_reason).toBe("stop");
    expect(r.choices[0]!.message.content).toMatch(/^[A-Z].*[.!?]$/s);
    expect(r.usage!.completion_tokens).toBeGreaterThanOrEqual(8); // default outputTokens.min
  });

  it("is deterministic per seed, and greedy decoding (temperature 0) ignores the seed", async () => {
    const text = async (p: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming>) =>
      (await client.chat.completions.create({ model: MODEL, messages, ...p })).choices[0]!.message.content;
    expect(await text({ seed: 5 })).toBe(await text({ seed: 5 }));
    expect(await text({ seed: 5 })).not.toBe(await text({ seed: 6 }));
    expect(await text({ temperature: 0 })).toBe(await text({ temperature: 0, seed: 77 }));
    expect(await text({})).not.toBe(await text({})); // sampling without a seed varies
  });

  it("stops at max_tokens with finish_reason length, counting exactly max_tokens", async () => {
    const r = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 5, seed: 3 });
    expect(r.choices[0]!.finish_reason).toBe("length");
    expect(r.usage!.completion_tokens).toBe(5);
    const s = await streamChat({ model: MODEL, messages, max_completion_tokens: 5, seed: 3 });
    expect(s.finish).toBe("length");
    expect(s.content).toBe(r.choices[0]!.message.content);
  });

  it("honours ignore_eos and min_tokens (vLLM extensions)", async () => {
    const long = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 200, seed: 3,
      ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(long.usage!.completion_tokens).toBe(200);
    expect(long.choices[0]!.finish_reason).toBe("length");
    const min = await client.chat.completions.create({ model: MODEL, messages, seed: 3, min_tokens: 120,
      max_tokens: 400 } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(min.usage!.completion_tokens).toBeGreaterThanOrEqual(120);
    expect(min.choices[0]!.finish_reason).toBe("stop");
  });

  it("cuts the reply before a stop string, streamed and not, even when it spans tokens", async () => {
    const base = { model: MODEL, messages, seed: 42, max_tokens: 60 };
    const full = (await client.chat.completions.create(base)).choices[0]!.message.content!;
    const words = full.split(" ");
    // A stop string straddling the boundary between the 4th and 5th word tokens.
    const stop = `${words[3]!.slice(-2)} ${words[4]!.slice(0, 2)}`;
    const expected = full.slice(0, full.indexOf(stop));
    const whole = await client.chat.completions.create({ ...base, stop: [stop, "never-matches-this"] });
    expect(whole.choices[0]!.message.content).toBe(expected);
    expect(whole.choices[0]!.finish_reason).toBe("stop");
    expect((whole.choices[0] as unknown as { stop_reason: string }).stop_reason).toBe(stop);
    const streamed = await streamChat({ ...base, stop });
    expect(streamed.content).toBe(expected);
    expect(streamed.finish).toBe("stop");
    const kept = await client.chat.completions.create({ ...base, stop, include_stop_str_in_output: true } as
      OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(kept.choices[0]!.message.content).toBe(expected + stop);
  });

  it("accepts content given as text parts", async () => {
    const parts = await client.chat.completions.create({ model: MODEL, seed: 1, messages: [
      { role: "user", content: [{ type: "text", text: "Tell me" }, { type: "text", text: "about rivers." }] }] });
    const joined = await client.chat.completions.create({ model: MODEL, seed: 1,
      messages: [{ role: "user", content: "Tell me\nabout rivers." }] });
    expect(parts.choices[0]!.message.content).toBe(joined.choices[0]!.message.content);
    expect(parts.usage!.prompt_tokens).toBe(joined.usage!.prompt_tokens);
  });
});

describe("text completions through the OpenAI SDK", () => {
  it("streams and returns the same text, defaulting max_tokens to 16", async () => {
    const whole = await client.completions.create({ model: MODEL, prompt: "Once upon a time", seed: 9 });
    expect(whole.object).toBe("text_completion");
    expect(whole.choices[0]!.finish_reason).toBe("length");
    expect(whole.usage).toMatchObject({ prompt_tokens: 4, completion_tokens: 16, total_tokens: 20 });
    const stream = await client.completions.create({ model: MODEL, prompt: "Once upon a time", seed: 9, stream: true,
      stream_options: { include_usage: true } });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of stream) {
      text += c.choices.map((ch) => ch.text).join("");
      usage = c.usage ?? usage;
    }
    expect(text).toBe(whole.choices[0]!.text);
    expect(usage?.completion_tokens).toBe(16);
  });

  it("takes a prompt as token ids", async () => {
    const r = await client.completions.create({ model: MODEL, prompt: [1000, 2000, 3000], max_tokens: 2 });
    expect(r.usage!.prompt_tokens).toBe(3);
  });
});

describe("models and errors through the OpenAI SDK", () => {
  it("lists the served models with their context windows", async () => {
    const models: Array<OpenAI.Model & { max_model_len?: number; root?: string }> = [];
    for await (const m of client.models.list()) models.push(m);
    expect(models.map((m) => [m.id, m.object, m.owned_by, m.max_model_len, m.root])).toEqual([
      [MODEL, "model", "vllm", 4096, MODEL],
      [SMALL, "model", "vllm", 64, SMALL],
    ]);
  });

  it("raises NotFoundError for an unknown model", async () => {
    const err = await client.chat.completions.create({ model: "nope", messages }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect((err as APIError).status).toBe(404);
    expect((err as APIError).message).toContain("The model `nope` does not exist.");
    expect((err as APIError).type).toBe("NotFoundError");
  });

  it("raises BadRequestError mentioning the maximum context length", async () => {
    const long = await client.chat.completions.create({ model: SMALL, messages, max_tokens: 60 }).catch((e: unknown) => e);
    expect(long).toBeInstanceOf(OpenAI.BadRequestError);
    expect((long as APIError).message).toContain("maximum context length");
    const huge = await client.chat.completions.create({ model: SMALL,
      messages: [{ role: "user", content: "word ".repeat(100) }] }).catch((e: unknown) => e);
    expect(huge).toBeInstanceOf(OpenAI.BadRequestError);
    expect((huge as APIError).message).toContain("maximum context length");
  });

  it("fits max_tokens exactly up to the context window", async () => {
    const prompt = await tokenCount({ model: SMALL, messages });
    const r = await client.chat.completions.create({ model: SMALL, messages, max_tokens: 64 - prompt, ignore_eos: true } as
      OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(r.usage!.total_tokens).toBe(64);
  });

  it("raises BadRequestError for invalid fields", async () => {
    for (const bad of [{ max_tokens: 0 }, { temperature: -1 }, { n: 2 }, { stop: 3 }, { messages: [] }]) {
      const err = await client.chat.completions.create({ model: MODEL, messages, ...bad } as never)
        .catch((e: unknown) => e);
      expect(err, JSON.stringify(bad)).toBeInstanceOf(OpenAI.BadRequestError);
    }
  });
});

describe("api key", () => {
  it("guards /v1/* only, answering 401 with vLLM's body", async () => {
    const guarded = await startVllmSim({ apiKey: "s3cret", profile: "zero" });
    try {
      const wrong = new OpenAI({ baseURL: guarded.baseURL, apiKey: "wrong", maxRetries: 0 });
      const err = await wrong.models.list().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
      expect((err as APIError).status).toBe(401);

      const raw = await post(`${guarded.baseURL}/chat/completions`, { messages });
      expect(raw.status).toBe(401);
      expect(JSON.parse(raw.body)).toEqual({ error: "Unauthorized" });

      const right = new OpenAI({ baseURL: guarded.baseURL, apiKey: "s3cret", maxRetries: 0 });
      const r = await right.chat.completions.create({ model: "sim-model", messages, max_tokens: 3 });
      expect(r.usage!.completion_tokens).toBe(3);
      // Outside /v1 no key is needed, as in vLLM.
      expect((await post(`${guarded.url}/tokenize`, { prompt: "hi" })).status).toBe(200);
    } finally {
      await guarded.close();
    }
  });
});
