/** Fault injection, by option, by `setFaults` and through the `/_sim/*` control endpoints. */
import OpenAI from "openai";
import { afterEach, describe, expect, it } from "vitest";
import { type VllmSim, type VllmSimOptions, startVllmSim } from "../src/index.js";
import { get, metric, openStream, post, sleep, waitFor } from "./helpers.js";

let sim: VllmSim | undefined;
afterEach(async () => {
  await sim?.close();
  sim = undefined;
});

async function start(opts: VllmSimOptions = {}): Promise<VllmSim> {
  sim = await startVllmSim({ profile: "zero", ...opts });
  return sim;
}

const chat = (s: VllmSim) => `${s.url}/v1/chat/completions`;
const body = (extra: Record<string, unknown> = {}) =>
  ({ messages: [{ role: "user", content: "hello" }], max_tokens: 20, ignore_eos: true, ...extra });
const sdk = (s: VllmSim) => new OpenAI({ baseURL: s.baseURL, apiKey: "x", maxRetries: 0 });
const streamParams = () => ({ model: "sim-model", ...body(), stream: true }) as OpenAI.ChatCompletionCreateParamsStreaming;

describe("HTTP errors before output", () => {
  it("answers errorRate share with a 500 InternalServerError", async () => {
    const s = await start({ faults: { errorRate: 1 } });
    const res = await post(chat(s), body({ stream: true }));
    expect(res.status).toBe(500);
    expect(JSON.parse(res.body).error).toMatchObject({ type: "InternalServerError", code: 500 });
    const err = await sdk(s).chat.completions.create(body() as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    expect(s.stats().faults.error).toBe(2);
    expect(s.stats().requests.failed).toBe(2);
  });

  it("uses the configured status, e.g. 503", async () => {
    const s = await start({ faults: { errorRate: 1, errorStatus: 503 } });
    const res = await post(chat(s), body());
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body).error.type).toBe("ServiceUnavailableError");
  });

  it("applies a rate with seeded dice, reproducibly after reset", async () => {
    const s = await start({ faults: { errorRate: 0.5 }, faultSeed: 12345 });
    const run = async () => {
      const statuses: number[] = [];
      for (let i = 0; i < 40; i++) statuses.push((await post(chat(s), body({ max_tokens: 1 }))).status);
      return statuses;
    };
    const first = await run();
    const failed = first.filter((x) => x === 500).length;
    expect(failed).toBeGreaterThan(5);
    expect(failed).toBeLessThan(35);
    expect(first.every((x) => x === 200 || x === 500)).toBe(true);
    s.reset();
    expect(await run()).toEqual(first);
  });
});

describe("mid-stream error", () => {
  it("streams N tokens, then data: {\"error\": …} and data: [DONE]", async () => {
    const s = await start({ faults: { midStreamErrorRate: 1, midStreamErrorAfterTokens: 3 } });
    const st = openStream(chat(s), body({ stream: true }));
    expect(await st.status).toBe(200);
    expect(await st.finished).toEqual({ complete: true });
    const [role, t1, t2, t3, error, done] = st.events;
    expect(JSON.parse(role!).choices[0].delta.role).toBe("assistant");
    for (const t of [t1, t2, t3]) expect(JSON.parse(t!).choices[0].delta.content).toBeTruthy();
    expect(JSON.parse(error!).error).toMatchObject({ type: "InternalServerError", code: 500 });
    expect(done).toBe("[DONE]");
    expect(st.events).toHaveLength(6);
    expect(s.stats().requests).toMatchObject({ failed: 1, running: 0 });
    expect(s.stats().recent[0]).toMatchObject({ finishReason: "error", fault: "mid-stream-error", completionTokens: 3 });
  });

  it("surfaces as an APIError in the OpenAI SDK stream, and as a 500 when not streaming", async () => {
    const s = await start({ faults: { midStreamErrorRate: 1, midStreamErrorAfterTokens: 2 } });
    const stream = await sdk(s).chat.completions.create(streamParams());
    let content = "";
    const err = await (async () => {
      for await (const c of stream) content += c.choices[0]?.delta.content ?? "";
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(content.length).toBeGreaterThan(0);
    const res = await post(chat(s), body());
    expect(res.status).toBe(500);
  });
});

describe("hang", () => {
  it("sends headers, then nothing, holding the slot until the client gives up", async () => {
    const s = await start({ faults: { hangRate: 1 } });
    const st = openStream(chat(s), body({ stream: true }));
    expect(await st.status).toBe(200);
    await waitFor(() => s.stats().models[0]!.hung === 1, "request hung");
    await sleep(50);
    expect(st.events).toEqual([]);
    expect(metric((await get(`${s.url}/metrics`)).body, "vllm:num_requests_running")).toBe(1);
    st.destroy();
    await waitFor(() => s.stats().requests.running === 0, "slot freed");
    expect(s.stats().requests.aborted).toBe(1);
    expect(s.stats().recent[0]).toMatchObject({ finishReason: "abort", fault: "hang" });
  });

  it("can hang after some tokens", async () => {
    const s = await start({ faults: { hangRate: 1, hangAfterTokens: 2 } });
    const st = openStream(chat(s), body({ stream: true }));
    await waitFor(() => s.stats().faults.hang === 1 && st.events.length === 3, "hang after role + 2 tokens");
    await sleep(30);
    expect(st.events).toHaveLength(3); // nothing more arrives
    st.destroy();
    await waitFor(() => s.stats().requests.running === 0, "slot freed");
  });
});

describe("disconnect", () => {
  it("drops the connection after N tokens without [DONE]", async () => {
    const s = await start({ faults: { disconnectRate: 1, disconnectAfterTokens: 4 } });
    const st = openStream(chat(s), body({ stream: true }));
    expect(await st.finished).toEqual({ complete: false });
    expect(st.events).toHaveLength(5); // role + 4 tokens
    expect(st.events).not.toContain("[DONE]");
    expect(s.stats().requests).toMatchObject({ disconnected: 1, aborted: 0, running: 0 });
    expect(s.stats().faults.disconnect).toBe(1);
    // The OpenAI SDK sees a broken stream.
    const stream = await sdk(s).chat.completions.create(streamParams());
    const err = await (async () => {
      for await (const _ of stream) { /* drain */ }
    })().then(() => undefined, (e: unknown) => e);
    expect(err).toBeDefined();
  });
});

describe("slow tokens", () => {
  it("adds the configured delay before every token", async () => {
    const s = await start({ faults: { slowTokenMs: 20 } });
    const t0 = performance.now();
    const res = await post(chat(s), body({ max_tokens: 5 }));
    expect(res.status).toBe(200);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(5 * 20 - 2);
  });
});

describe("health fault and the control endpoints", () => {
  it("switches /health to 503 and back through POST /_sim/faults", async () => {
    const s = await start();
    expect((await get(`${s.url}/health`)).status).toBe(200);
    const set = await post(`${s.url}/_sim/faults`, { unhealthy: true });
    expect(set.status).toBe(200);
    expect(JSON.parse(set.body)).toMatchObject({ unhealthy: true, errorRate: 0 });
    expect((await get(`${s.url}/health`)).status).toBe(503);
    // Requests are still served while unhealthy.
    expect((await post(chat(s), body({ max_tokens: 1 }))).status).toBe(200);
    await post(`${s.url}/_sim/faults`, { unhealthy: false });
    expect((await get(`${s.url}/health`)).status).toBe(200);
  });

  it("reads faults and stats, and rejects bad fault bodies with 400", async () => {
    const s = await start({ faults: { slowTokenMs: 1 } });
    expect(JSON.parse((await get(`${s.url}/_sim/faults`)).body).slowTokenMs).toBe(1);
    for (const bad of [{ errorRate: 5 }, { nonsense: 1 }, "[]", "{oops"]) {
      const res = await post(`${s.url}/_sim/faults`, bad);
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(JSON.parse(res.body).error.type).toBe("BadRequestError");
    }
    await post(chat(s), body({ max_tokens: 2 }));
    const stats = JSON.parse((await get(`${s.url}/_sim/stats`)).body);
    expect(stats.requests).toMatchObject({ total: 1, completed: 1 });
    expect(stats.tokens.generation).toBe(2);
  });

  it("resets counters, metrics, cache and faults with POST /_sim/reset", async () => {
    const s = await start({ faults: { slowTokenMs: 1 } });
    await post(chat(s), body({ max_tokens: 2 }));
    s.setFaults({ errorRate: 1 });
    expect((await post(chat(s), body())).status).toBe(500);
    const res = await post(`${s.url}/_sim/reset`, {});
    expect(res.status).toBe(200);
    const st = s.stats();
    expect(st.requests.total).toBe(0);
    expect(st.tokens.generation).toBe(0);
    expect(st.recent).toEqual([]);
    expect(st.models[0]!.cachedBlocks).toBe(0);
    expect(s.faults()).toMatchObject({ errorRate: 0, slowTokenMs: 1 });
    expect(metric((await get(`${s.url}/metrics`)).body, "vllm:generation_tokens_total")).toBe(0);
    expect((await post(chat(s), body({ max_tokens: 1 }))).status).toBe(200);
  });

  it("validates setFaults from code", async () => {
    const s = await start();
    expect(() => s.setFaults({ hangRate: -1 })).toThrow(/hangRate/);
    expect(s.setFaults({ hangRate: 0.5 })).toMatchObject({ hangRate: 0.5 });
  });
});

describe("cold-start mode", () => {
  it("answers /health and /v1/* with 503 until the cold start is over, then serves", async () => {
    const s = await start({ coldStartMs: 400 });
    const started = Date.now();
    expect((await get(`${s.url}/health`)).status).toBe(503);
    const refused = await post(chat(s), body());
    expect(refused.status).toBe(503);
    expect(JSON.parse(refused.body).error.type).toBe("ServiceUnavailableError");
    expect((await get(`${s.url}/v1/models`)).status).toBe(503);
    // The control routes answer while loading.
    const state = JSON.parse((await get(`${s.url}/_sim/cold-start`)).body);
    expect(state).toMatchObject({ loading: true, coldStartMs: 400 });
    await waitFor(async () => (await get(`${s.url}/health`)).status === 200, "the end of the cold start");
    expect(Date.now() - started).toBeGreaterThanOrEqual(390);
    expect(s.readyAt()).toBeLessThanOrEqual(Date.now());
    expect((await post(chat(s), body())).status).toBe(200);
  });

  it("starts again after POST /_sim/cold-start (with its own length) and after POST /_sim/reset", async () => {
    const s = await start({ coldStartMs: 0 });
    expect((await get(`${s.url}/health`)).status).toBe(200);
    const r = await post(`${s.url}/_sim/cold-start`, { ms: 300 });
    expect(JSON.parse(r.body)).toMatchObject({ loading: true });
    expect((await get(`${s.url}/health`)).status).toBe(503);
    await waitFor(async () => (await get(`${s.url}/health`)).status === 200, "the end of the cold start");
    expect((await post(`${s.url}/_sim/cold-start`, { ms: -1 })).status).toBe(400);
    expect((await post(`${s.url}/_sim/cold-start`, { seconds: 1 })).status).toBe(400);
    await s.close();

    const t = await start({ coldStartMs: 300 });
    await waitFor(async () => (await get(`${t.url}/health`)).status === 200, "the end of the cold start");
    await post(`${t.url}/_sim/reset`, {});
    expect((await get(`${t.url}/health`)).status).toBe(503);
  });

  it("rejects a negative cold start", async () => {
    await expect(start({ coldStartMs: -5 })).rejects.toThrow(/coldStartMs/);
  });
});
