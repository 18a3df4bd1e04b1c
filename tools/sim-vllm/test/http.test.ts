/** The non-OpenAI routes and raw protocol details, over plain HTTP. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type VllmSim, startVllmSim } from "../src/index.js";
import { get, metric, openStream, post, request } from "./helpers.js";

let sim: VllmSim;

beforeAll(async () => {
  sim = await startVllmSim({ models: ["alpha:2048", "beta:512"], profile: "zero", maxBodyBytes: 64 * 1024 });
});
afterAll(() => sim.close());

describe("GET /health", () => {
  it("answers 200 with an empty body", async () => {
    const res = await get(`${sim.url}/health`);
    expect(res.status).toBe(200);
    expect(res.body).toBe("");
  });
});

describe("GET /v1/models", () => {
  it("lists every model in vLLM's shape", async () => {
    const res = await get(`${sim.url}/v1/models`);
    expect(res.status).toBe(200);
    const body = JSON.parse(res.body) as { object: string; data: Array<Record<string, unknown>> };
    expect(body.object).toBe("list");
    expect(body.data).toHaveLength(2);
    expect(body.data[0]).toMatchObject({ id: "alpha", object: "model", owned_by: "vllm", root: "alpha", max_model_len: 2048 });
    expect(typeof body.data[0]!.created).toBe("number");
    expect(body.data[1]).toMatchObject({ id: "beta", max_model_len: 512 });
  });
});

describe("POST /tokenize", () => {
  it("counts a prompt and returns its ids and the model's context window", async () => {
    const res = await post(`${sim.url}/tokenize`, { model: "beta", prompt: "Hello, world!" });
    expect(res.status).toBe(200);
    const body = JSON.parse(res.body) as { count: number; tokens: number[]; max_model_len: number; token_strs: null };
    expect(body.count).toBe(4);
    expect(body.tokens).toHaveLength(4);
    expect(body.tokens.every((t) => Number.isInteger(t))).toBe(true);
    expect(body.max_model_len).toBe(512);
    expect(body.token_strs).toBeNull();
  });

  it("applies the chat template to messages, with the generation prompt by default", async () => {
    const messages = [{ role: "user", content: "Hello, world!" }];
    const withPrompt = JSON.parse((await post(`${sim.url}/tokenize`, { messages, return_token_strs: true })).body);
    expect(withPrompt.count).toBe(5 + 4 + 3);
    expect(withPrompt.token_strs.slice(0, 3)).toEqual(["<|im_start|>", "user", "\n"]);
    expect(withPrompt.max_model_len).toBe(2048); // the first model by default
    const without = JSON.parse((await post(`${sim.url}/tokenize`, { messages, add_generation_prompt: false })).body);
    expect(without.count).toBe(5 + 4);
  });

  it("agrees with usage.prompt_tokens", async () => {
    const messages = [{ role: "system", content: "Be kind." }, { role: "user", content: "What is 2 + 2?" }];
    const count = JSON.parse((await post(`${sim.url}/tokenize`, { model: "alpha", messages })).body).count;
    const chat = JSON.parse((await post(`${sim.url}/v1/chat/completions`, { model: "alpha", messages, max_tokens: 2 })).body);
    expect(chat.usage.prompt_tokens).toBe(count);
  });

  it("rejects an unknown model and a missing prompt", async () => {
    const unknown = await post(`${sim.url}/tokenize`, { model: "gamma", prompt: "x" });
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body).error).toMatchObject({ type: "NotFoundError", code: 404 });
    const missing = await post(`${sim.url}/tokenize`, { model: "alpha" });
    expect(missing.status).toBe(400);
    expect(JSON.parse(missing.body).error.type).toBe("BadRequestError");
  });
});

describe("GET /metrics", () => {
  it("exports vLLM's metric names per model_name", async () => {
    await post(`${sim.url}/v1/chat/completions`, { model: "beta", messages: [{ role: "user", content: "hi" }],
      max_tokens: 4 });
    const res = await get(`${sim.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = res.body;
    for (const name of ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
      "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:prefix_cache_queries_total",
      "vllm:prefix_cache_hits_total"]) {
      expect(metric(text, name, { model_name: "alpha" }), name).toBeDefined();
      expect(metric(text, name, { model_name: "beta" }), name).toBeDefined();
    }
    for (const h of ["vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
      "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds"]) {
      expect(text).toContain(`# TYPE ${h} histogram`);
      expect(metric(text, `${h}_bucket`, { model_name: "beta", le: "+Inf" }), h).toBeGreaterThanOrEqual(1);
      expect(metric(text, `${h}_count`, { model_name: "beta" }), h).toBeGreaterThanOrEqual(1);
    }
    expect(metric(text, "vllm:generation_tokens_total", { model_name: "beta" })).toBe(4);
    expect(metric(text, "vllm:inter_token_latency_seconds_count", { model_name: "beta" })).toBe(3);
    expect(metric(text, "vllm:request_success_total", { model_name: "beta", finished_reason: "length" })).toBe(1);
  });
});

describe("request validation", () => {
  it("answers bad JSON and wrong types with 400 BadRequestError naming the field", async () => {
    const url = `${sim.url}/v1/chat/completions`;
    const cases: Array<[unknown, string | null]> = [
      ["{not json", null],
      ["[1,2]", null],
      [{ messages: "hi" }, "messages"],
      [{ messages: [{ content: "no role" }] }, "messages[0].role"],
      [{ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] }, "messages[0].content"],
      [{ messages: [{ role: "user", content: "x" }], max_tokens: "ten" }, "max_tokens"],
      [{ messages: [{ role: "user", content: "x" }], stream: "yes" }, "stream"],
      [{ messages: [{ role: "user", content: "x" }], stream_options: { include_usage: true } }, "stream_options"],
      [{ messages: [{ role: "user", content: "x" }], model: 5 }, "model"],
      [{ messages: [{ role: "user", content: "x" }], min_tokens: 9, max_tokens: 3 }, "min_tokens"],
      [{ messages: [{ role: "user", content: "x" }], top_p: 0 }, "top_p"],
    ];
    for (const [body, param] of cases) {
      const res = await post(url, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      const err = JSON.parse(res.body).error;
      expect(err).toMatchObject({ type: "BadRequestError", code: 400, param });
      expect(typeof err.message).toBe("string");
    }
  });

  it("validates text completions", async () => {
    const url = `${sim.url}/v1/completions`;
    for (const body of [{ prompt: 3 }, { prompt: "" }, { prompt: ["a", "b"] }, { prompt: "x", echo: true }]) {
      const res = await post(url, { model: "alpha", ...body });
      expect(res.status, JSON.stringify(body)).toBe(400);
    }
  });

  it("refuses bodies over maxBodyBytes with 413", async () => {
    const res = await post(`${sim.url}/v1/chat/completions`,
      { messages: [{ role: "user", content: "x".repeat(100 * 1024) }] });
    expect(res.status).toBe(413);
    expect(JSON.parse(res.body).error.code).toBe(413);
  });

  it("answers unknown paths with 404 and wrong methods with 405", async () => {
    const missing = await get(`${sim.url}/v2/nothing`);
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body)).toEqual({ detail: "Not Found" });
    const wrong = await get(`${sim.url}/v1/chat/completions`);
    expect(wrong.status).toBe(405);
    expect(wrong.headers.allow).toBe("POST");
    expect((await request(`${sim.url}/health`, "DELETE")).status).toBe(405);
  });

  it("uses the first model when the request names none", async () => {
    const res = await post(`${sim.url}/v1/chat/completions`, { messages: [{ role: "user", content: "x" }], max_tokens: 1 });
    expect(JSON.parse(res.body).model).toBe("alpha");
  });
});

describe("/_sim/replies", () => {
  const MARKDOWN = "## Steps\n\n1. one\n2. two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```ts\nconst x = `y`; // <b>\n```\n";
  const chat = (content: string) => post(`${sim.url}/v1/chat/completions`, { model: "alpha",
    messages: [{ role: "user", content: "earlier" }, { role: "assistant", content: "ok" }, { role: "user", content }] });

  it("answers a prompt whose last user message matches with exactly the scripted text, token by token", async () => {
    const set = await post(`${sim.url}/_sim/replies`, { replies: [{ match: "[markdown]", text: MARKDOWN }] });
    expect(set.status).toBe(200);
    expect(JSON.parse((await get(`${sim.url}/_sim/replies`)).body)).toEqual({ replies: [{ match: "[markdown]", text: MARKDOWN }] });
    const res = JSON.parse((await chat("show me [markdown] please")).body);
    expect(res.choices[0].message.content).toBe(MARKDOWN);
    expect(res.choices[0].finish_reason).toBe("stop");
    const s = openStream(`${sim.url}/v1/chat/completions`, { model: "alpha", stream: true, messages: [{ role: "user", content: "[markdown]" }] });
    await s.finished;
    const deltas = s.events.slice(1, -1).map((e) => JSON.parse(e).choices[0].delta.content as string);
    expect(deltas.length).toBeGreaterThan(10); // streamed in pieces, not at once
    expect(deltas.join("")).toBe(MARKDOWN);
    // Other prompts (and an earlier turn that matched) get the usual words.
    expect(JSON.parse((await chat("something else")).body).choices[0].message.content).not.toContain("##");
  });

  it("refuses a malformed script with 400 and forgets the scripts on reset", async () => {
    for (const replies of [undefined, "x", [{ match: "", text: "t" }], [{ match: "m" }]]) {
      const res = await post(`${sim.url}/_sim/replies`, { replies });
      expect(res.status, JSON.stringify(replies)).toBe(400);
    }
    await post(`${sim.url}/_sim/replies`, { replies: [{ match: "[markdown]", text: MARKDOWN }] });
    await post(`${sim.url}/_sim/reset`, {});
    expect(JSON.parse((await get(`${sim.url}/_sim/replies`)).body)).toEqual({ replies: [] });
    expect(JSON.parse((await chat("[markdown]")).body).choices[0].message.content).not.toBe(MARKDOWN);
  });
});

describe("raw stream format", () => {
  it("frames every event as `data: <json>` and ends with `data: [DONE]`", async () => {
    const s = openStream(`${sim.url}/v1/chat/completions`, { model: "alpha", stream: true, max_tokens: 3,
      messages: [{ role: "user", content: "x" }] });
    expect(await s.status).toBe(200);
    expect(await s.finished).toEqual({ complete: true });
    expect(s.events.at(-1)).toBe("[DONE]");
    const chunks = s.events.slice(0, -1).map((e) => JSON.parse(e));
    expect(chunks).toHaveLength(1 + 3); // role chunk + 3 tokens, the last carrying finish_reason
    expect(chunks[0].choices[0]).toEqual({ index: 0, delta: { role: "assistant", content: "" }, logprobs: null,
      finish_reason: null });
    expect(chunks[3].choices[0]).toMatchObject({ finish_reason: "length", stop_reason: null });
    expect(chunks.every((c) => c.usage === undefined)).toBe(true); // no usage chunk without include_usage
  });

  it("sets text/event-stream", async () => {
    const res = await post(`${sim.url}/v1/completions`, { model: "alpha", prompt: "x", stream: true, max_tokens: 1 });
    expect(res.headers["content-type"]).toBe("text/event-stream; charset=utf-8");
    expect(res.body.endsWith("data: [DONE]\n\n")).toBe(true);
  });
});
