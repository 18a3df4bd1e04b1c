/**
 * Scheduling behaviour: queueing beyond max-num-seqs, the prefix cache, aborts on client disconnect, and that the
 * configured timing is applied. Effects are asserted through metrics and stats counters; wall-clock only as lower
 * bounds (a timer never fires early), never as upper bounds.
 */
import { afterEach, describe, expect, it } from "vitest";
import { type VllmSim, type VllmSimOptions, startVllmSim } from "../src/index.js";
import { type OpenStream, chatWithSystem, get, metric, openStream, post, waitFor } from "./helpers.js";

let sim: VllmSim | undefined;
afterEach(async () => {
  await sim?.close();
  sim = undefined;
});

async function start(opts: VllmSimOptions): Promise<VllmSim> {
  sim = await startVllmSim(opts);
  return sim;
}

const chat = (s: VllmSim) => `${s.url}/v1/chat/completions`;
const ask = (text: string, extra: Record<string, unknown> = {}) =>
  ({ messages: [{ role: "user", content: text }], ...extra });

async function gauges(s: VllmSim, model = "sim-model") {
  const text = (await get(`${s.url}/metrics`)).body;
  return {
    running: metric(text, "vllm:num_requests_running", { model_name: model }),
    waiting: metric(text, "vllm:num_requests_waiting", { model_name: model }),
    kv: metric(text, "vllm:kv_cache_usage_perc", { model_name: model }),
    text,
  };
}

describe("queueing", () => {
  it("runs at most max-num-seqs requests and queues the rest (vllm:num_requests_waiting)", async () => {
    // Slow decode keeps the first two busy while we look.
    const s = await start({ maxNumSeqs: 2, timing: { decodeTokensPerSec: 20 } });
    const streams: OpenStream[] = [];
    for (let i = 0; i < 5; i++) {
      streams.push(openStream(chat(s), ask(`question ${i}`, { stream: true, ignore_eos: true, max_tokens: 1000 })));
    }
    await waitFor(async () => (await gauges(s)).waiting === 3, "3 waiting requests");
    const g = await gauges(s);
    expect(g.running).toBe(2);
    expect(g.kv).toBeGreaterThan(0);
    expect(s.stats().requests).toMatchObject({ running: 2, waiting: 3, maxRunning: 2, maxWaiting: 3 });
    // Queued streams already got their 200 headers (vLLM accepts, then queues) but no tokens.
    expect(await Promise.all(streams.map((x) => x.status))).toEqual([200, 200, 200, 200, 200]);
    expect(streams[4]!.events).toEqual([]);

    for (const x of streams) x.destroy();
    await waitFor(() => s.stats().requests.running + s.stats().requests.waiting === 0, "all aborted");
    expect(s.stats().requests.aborted).toBe(5);
    expect((await gauges(s)).waiting).toBe(0);
  });

  it("admits waiting requests in order as slots free, and records their queue time", async () => {
    const s = await start({ maxNumSeqs: 1 });
    // A hung request holds the only slot until we let go, so the three below are certainly queued together.
    s.setFaults({ hangRate: 1 });
    const blocker = openStream(chat(s), ask("blocker", { stream: true }));
    await waitFor(() => s.stats().requests.running === 1, "blocker running");
    s.setFaults({ hangRate: 0 });
    const pending = [0, 1, 2].map((i) => post(chat(s), ask(`q${i}`, { max_tokens: 10, ignore_eos: true })));
    await waitFor(() => s.stats().requests.waiting === 3, "three queued");
    blocker.destroy();
    const results = await Promise.all(pending);
    expect(results.map((r) => r.status)).toEqual([200, 200, 200]);
    const st = s.stats();
    expect(st.requests).toMatchObject({ completed: 3, aborted: 1, maxRunning: 1, maxWaiting: 3 });
    const ids = results.map((r) => JSON.parse(r.body).id);
    expect(st.recent.slice(1).map((r) => r.id)).toEqual(ids); // FIFO: they finished in arrival order
    // The last one also waited for two full replies of 10 tokens at 1 ms each.
    expect(st.recent[3]!.queueMs).toBeGreaterThanOrEqual(15);
    const text = (await get(`${s.url}/metrics`)).body;
    expect(metric(text, "vllm:request_queue_time_seconds_count", { model_name: "sim-model" })).toBe(4);
  });

  it("keeps a queue per model", async () => {
    const s = await start({ models: ["a", "b"], maxNumSeqs: 1, timing: { decodeTokensPerSec: 20 } });
    const x = openStream(chat(s), ask("x", { model: "a", stream: true, ignore_eos: true, max_tokens: 1000 }));
    const y = openStream(chat(s), ask("y", { model: "b", stream: true, ignore_eos: true, max_tokens: 1000 }));
    await waitFor(() => s.stats().requests.running === 2, "one running per model");
    expect(s.stats().requests.waiting).toBe(0);
    x.destroy();
    y.destroy();
  });
});

describe("client disconnect", () => {
  it("aborts the request and frees its slot for the next one", async () => {
    const s = await start({ maxNumSeqs: 1, timing: { decodeTokensPerSec: 50 } });
    const first = openStream(chat(s), ask("long", { stream: true, ignore_eos: true, max_tokens: 1000 }));
    await waitFor(() => first.events.length >= 3, "first tokens");
    const second = post(chat(s), ask("short", { max_tokens: 2 }));
    await waitFor(() => s.stats().requests.waiting === 1, "second request queued");

    first.destroy();
    const res = await second;
    expect(res.status).toBe(200);
    const st = s.stats();
    expect(st.requests).toMatchObject({ aborted: 1, completed: 1, running: 0, waiting: 0 });
    const aborted = st.recent.find((r) => r.finishReason === "abort")!;
    expect(aborted.completionTokens).toBeGreaterThanOrEqual(2);
    expect(aborted.completionTokens).toBeLessThan(1000);
    const text = (await get(`${s.url}/metrics`)).body;
    expect(metric(text, "vllm:request_success_total", { finished_reason: "abort" })).toBe(1);
    expect(metric(text, "vllm:num_requests_running")).toBe(0);
  });

  it("stops generating for an abandoned non-streaming request", async () => {
    const s = await start({ timing: { decodeTokensPerSec: 50 } });
    const stream = openStream(chat(s), ask("x", { ignore_eos: true, max_tokens: 1000 })); // stream: false
    await waitFor(() => s.stats().requests.running === 1 && s.stats().tokens.generation > 0, "generation started");
    stream.destroy();
    await waitFor(() => s.stats().requests.running === 0, "slot freed");
    const generated = s.stats().tokens.generation;
    await new Promise((r) => setTimeout(r, 100));
    expect(s.stats().tokens.generation).toBe(generated); // nothing more is produced
    expect(s.stats().requests.aborted).toBe(1);
  });
});

describe("prefix cache", () => {
  it("reuses a repeated prompt prefix: cache hits and a shorter simulated prefill", async () => {
    const s = await start({ timing: { prefillTokensPerSec: 1000 } });
    const first = JSON.parse((await post(chat(s), chatWithSystem("sim-model", "First question?", { max_tokens: 2 }))).body);
    const second = JSON.parse((await post(chat(s), chatWithSystem("sim-model", "Another one?", { max_tokens: 2 }))).body);
    expect(first.usage.prompt_tokens_details.cached_tokens).toBe(0);
    // The shared system message spans whole 16-token blocks; the differing user message does not hit.
    expect(second.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(96);
    expect(second.usage.prompt_tokens_details.cached_tokens).toBeLessThan(second.usage.prompt_tokens);
    const [r1, r2] = s.stats().recent;
    expect(r2!.cachedTokens).toBe(second.usage.prompt_tokens_details.cached_tokens);
    expect(r2!.prefillMs).toBeLessThan(r1!.prefillMs);
    expect(s.stats().prefixCache.hits).toBe(r2!.cachedTokens);
    const text = (await get(`${s.url}/metrics`)).body;
    expect(metric(text, "vllm:prefix_cache_hits_total")).toBe(r2!.cachedTokens);
    expect(metric(text, "vllm:prefix_cache_queries_total")).toBe(r1!.promptTokens + r2!.promptTokens);
  });

  it("misses when the leading message differs", async () => {
    const s = await start({});
    await post(chat(s), chatWithSystem("sim-model", "q", { max_tokens: 1 }));
    const other = { messages: [{ role: "system", content: "Different. ".repeat(40) }, { role: "user", content: "q" }],
      max_tokens: 1 };
    const r = JSON.parse((await post(chat(s), other)).body);
    expect(r.usage.prompt_tokens_details.cached_tokens).toBe(0);
  });

  it("caches the previous reply too, so the next turn of a conversation hits beyond the first prompt", async () => {
    const s = await start({});
    const turn1 = chatWithSystem("sim-model", "Tell me a story.", { seed: 1, max_tokens: 40, ignore_eos: true });
    const r1 = JSON.parse((await post(chat(s), turn1)).body);
    const turn2 = { ...turn1, messages: [...turn1.messages, r1.choices[0].message,
      { role: "user", content: "And then?" }] };
    const r2 = JSON.parse((await post(chat(s), turn2)).body);
    expect(r2.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(r1.usage.prompt_tokens);
  });

  it("can be disabled", async () => {
    const s = await start({ enablePrefixCaching: false });
    await post(chat(s), chatWithSystem("sim-model", "q", { max_tokens: 1 }));
    const r = JSON.parse((await post(chat(s), chatWithSystem("sim-model", "q", { max_tokens: 1 }))).body);
    expect(r.usage.prompt_tokens_details.cached_tokens).toBe(0);
    expect(s.stats().prefixCache).toEqual({ queries: 0, hits: 0 });
  });
});

describe("timing", () => {
  it("grows the simulated prefill with prompt length", async () => {
    const s = await start({ enablePrefixCaching: false, timing: { ttftMs: 2, prefillTokensPerSec: 10_000 } });
    await post(chat(s), ask("short", { max_tokens: 1 }));
    await post(chat(s), ask("long ".repeat(500), { max_tokens: 1 }));
    const [short, long] = s.stats().recent;
    expect(short!.prefillMs).toBeCloseTo(2 + (short!.promptTokens / 10_000) * 1000, 6);
    expect(long!.prefillMs).toBeCloseTo(2 + (long!.promptTokens / 10_000) * 1000, 6);
    expect(long!.ttftMs!).toBeGreaterThanOrEqual(long!.prefillMs - 1);
  });

  it("paces tokens at the decode rate and waits out the time to first token", async () => {
    const s = await start({ timing: { ttftMs: 60, decodeTokensPerSec: 100 } });
    const t0 = performance.now();
    const r = JSON.parse((await post(chat(s), ask("x", { max_tokens: 11, ignore_eos: true }))).body);
    const elapsed = performance.now() - t0;
    expect(r.usage.completion_tokens).toBe(11);
    // 60 ms to the first token, then 10 gaps of 10 ms.
    expect(elapsed).toBeGreaterThanOrEqual(155);
    const rec = s.stats().recent[0]!;
    expect(rec.ttftMs!).toBeGreaterThanOrEqual(59);
  });

  it("serves 64 concurrent streams in zero-time mode", async () => {
    const s = await start({ profile: "zero" });
    const streams = Array.from({ length: 64 }, (_, i) => openStream(chat(s),
      ask(`q${i}`, { stream: true, stream_options: { include_usage: true }, max_tokens: 200, ignore_eos: true })));
    const ends = await Promise.all(streams.map((x) => x.finished));
    expect(ends.every((e) => e.complete)).toBe(true);
    for (const x of streams) {
      expect(x.events.at(-1)).toBe("[DONE]");
      expect(JSON.parse(x.events.at(-2)!).usage.completion_tokens).toBe(200);
      expect(x.events).toHaveLength(1 + 200 + 1 + 1); // role, tokens, usage, [DONE]
    }
    expect(s.stats().requests.completed).toBe(64);
    expect(s.stats().tokens.generation).toBe(64 * 200);
  });
});
