import { ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { beforeEach, describe, expect, it } from "vitest";
import { createMemoryStore, type MemoryStore } from "../data/memory-store.js";
import type { ModelInput } from "../domain/types.js";
import { createHealthProber } from "./prober.js";

// A fake network: each URL answers with a status and body chosen by the test, or throws like fetch does.
type Answer = { status: number; body?: string } | Error;
function fakeFetch(routes: Map<string, Answer>, seen: Array<{ url: string; auth: string | null }>): typeof fetch {
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const url = String(input);
    seen.push({ url, auth: new Headers(init?.headers).get("authorization") });
    const answer = routes.get(url) ?? new TypeError("fetch failed", { cause: { code: "ECONNREFUSED" } });
    if (answer instanceof Error) throw answer;
    return new Response(answer.body ?? "", { status: answer.status });
  }) as typeof fetch;
}

const models = (ids: string[]) => JSON.stringify({ object: "list", data: ids.map((id) => ({ id, object: "model" })) });

function textModel(over: Partial<ModelInput> = {}): ModelInput {
  return {
    id: "m1",
    displayName: "M1",
    description: "",
    kind: "TEXT",
    tags: [],
    contextWindow: 4096,
    maxOutputTokens: 512,
    prices: { inputPer1k: 10n, outputPer1k: 10n, perImage: 0n },
    sortOrder: 0,
    upstream: { baseUrls: ["http://a:1", "http://b:1"], resolveUrl: "", apiKeyEnv: "", servedModelName: "", probe: "OPENAI" },
    scaleToZero: false,
    coldStartSeconds: 0,
    ...over,
  };
}

const silent = { info() {}, warn() {} };
let store: MemoryStore;
let routes: Map<string, Answer>;
let seen: Array<{ url: string; auth: string | null }>;

beforeEach(() => {
  store = createMemoryStore();
  routes = new Map();
  seen = [];
});

function healthy(base: string, served = "m1") {
  routes.set(`${base}/health`, { status: 200 });
  routes.set(`${base}/v1/models`, { status: 200, body: models([served]) });
}

function prober(over: Partial<Parameters<typeof createHealthProber>[0]> = {}) {
  return createHealthProber({
    store,
    log: silent,
    intervalMs: 0,
    timeoutMs: 500,
    failuresToUnhealthy: 1,
    readSecret: () => undefined,
    fetch: fakeFetch(routes, seen),
    ...over,
  });
}

describe("health prober", () => {
  it("marks a model AVAILABLE when every replica is healthy and serves it", async () => {
    await store.upsertModel(textModel(), 0n);
    healthy("http://a:1");
    healthy("http://b:1");
    await prober().probeAll();
    const m = await store.getModel("m1");
    expect(m?.health.status).toBe("AVAILABLE");
    expect(m?.health.replicas.map((r) => [r.baseUrl, r.healthy])).toEqual([["http://a:1", true], ["http://b:1", true]]);
  });

  it("marks it DEGRADED when some replicas fail, OFFLINE when all do, and announces each change once", async () => {
    await store.upsertModel(textModel(), 0n);
    healthy("http://a:1");
    routes.set("http://b:1/health", { status: 503 });
    const p = prober();
    await p.probeAll();
    expect((await store.getModel("m1"))?.health).toMatchObject({ status: "DEGRADED", reason: "1 of 2 replicas healthy" });
    const events = store.events.length;
    await p.probeAll(); // same result: nothing written
    expect(store.events.length).toBe(events);
    routes.set("http://a:1/health", new DOMException("timeout", "TimeoutError"));
    await p.probeAll();
    const m = await store.getModel("m1");
    expect(m?.health.status).toBe("OFFLINE");
    expect(m?.health.reason).toMatch(/no healthy replica \(0 of 2\)/);
    expect(m?.health.replicas.find((r) => r.baseUrl === "http://a:1")?.detail).toBe("timed out after 500 ms");
    expect(m?.health.replicas.find((r) => r.baseUrl === "http://b:1")?.detail).toBe("GET /health: HTTP 503");
    expect(store.events.length).toBe(events + 1);
  });

  it("marks a scale-to-zero model STANDBY (announced) while no replica is healthy, and AVAILABLE once one wakes", async () => {
    await store.upsertModel(textModel({ scaleToZero: true, coldStartSeconds: 60, upstream: { baseUrls: ["http://a:1"], resolveUrl: "", apiKeyEnv: "", servedModelName: "", probe: "OPENAI" } }), 0n);
    routes.set("http://a:1/health", { status: 503 });
    const p = prober();
    await p.probeAll();
    expect((await store.getModel("m1"))?.health).toMatchObject({ status: "STANDBY", reason: "warming up (0 of 1 replicas ready); wakes on demand in about 60 s" });
    const announced = store.events.at(-1);
    expect(announced?.case === "model" && announced.value.model).toMatchObject({ status: ModelStatus.STANDBY, scaleToZero: true, coldStartSeconds: 60 });
    healthy("http://a:1");
    await p.probeAll();
    expect((await store.getModel("m1"))?.health.status).toBe("AVAILABLE");
  });

  it("counts a replica that does not serve the model as unhealthy", async () => {
    await store.upsertModel(textModel({ upstream: { baseUrls: ["http://a:1"], resolveUrl: "", apiKeyEnv: "", servedModelName: "served-name", probe: "OPENAI" } }), 0n);
    healthy("http://a:1", "something-else");
    await prober().probeAll();
    expect((await store.getModel("m1"))?.health.reason).toMatch(/model "served-name" not served \(serves: something-else\)/);
  });

  it("sends the API key named by api_key_env, and probes /health only when the registry lacks it", async () => {
    await store.upsertModel(textModel({ upstream: { baseUrls: ["http://a:1"], resolveUrl: "", apiKeyEnv: "VLLM_KEY", servedModelName: "", probe: "OPENAI" } }), 0n);
    healthy("http://a:1");
    await prober({ readSecret: (n) => (n === "VLLM_KEY" ? "s3cret" : undefined) }).probeAll();
    expect(seen.find((s) => s.url.endsWith("/v1/models"))?.auth).toBe("Bearer s3cret");
    expect((await store.getModel("m1"))?.health.status).toBe("AVAILABLE");

    seen.length = 0;
    routes.set("http://a:1/v1/models", { status: 401, body: '{"error":"Unauthorized"}' });
    await prober().probeAll();
    expect(seen.map((s) => s.url)).toEqual(["http://a:1/health"]);
    expect((await store.getModel("m1"))?.health.status).toBe("AVAILABLE");
  });

  it("judges a server without /health (Ollama) by its model list alone", async () => {
    await store.upsertModel(textModel({ upstream: { baseUrls: ["http://a:1", "http://b:1"], resolveUrl: "", apiKeyEnv: "", servedModelName: "llama3.2:3b", probe: "OPENAI" } }), 0n);
    routes.set("http://a:1/health", { status: 404, body: "404 page not found" });
    routes.set("http://a:1/v1/models", { status: 200, body: models(["llama3.2:3b"]) });
    routes.set("http://b:1/health", { status: 404, body: "404 page not found" });
    routes.set("http://b:1/v1/models", { status: 200, body: models(["qwen2.5:7b"]) });
    await prober().probeAll();
    const m = await store.getModel("m1");
    expect(m?.health.replicas.map((r) => [r.baseUrl, r.healthy])).toEqual([["http://a:1", true], ["http://b:1", false]]);
    expect(m?.health.replicas.find((r) => r.baseUrl === "http://b:1")?.detail).toMatch(/model "llama3.2:3b" not served/);
  });

  it("does not count a 404 on /health as healthy when the model list cannot be read without the key", async () => {
    await store.upsertModel(textModel({ upstream: { baseUrls: ["http://a:1"], resolveUrl: "", apiKeyEnv: "KEY", servedModelName: "", probe: "OPENAI" } }), 0n);
    routes.set("http://a:1/health", { status: 404 });
    routes.set("http://a:1/v1/models", { status: 200, body: models(["m1"]) });
    await prober().probeAll();
    const m = await store.getModel("m1");
    expect(m?.health.status).toBe("OFFLINE");
    expect(m?.health.replicas[0]?.detail).toMatch(/HTTP 404, and without the key in KEY/);
  });

  it("reports a rejected key", async () => {
    await store.upsertModel(textModel({ upstream: { baseUrls: ["http://a:1"], resolveUrl: "", apiKeyEnv: "VLLM_KEY", servedModelName: "", probe: "OPENAI" } }), 0n);
    routes.set("http://a:1/health", { status: 200 });
    routes.set("http://a:1/v1/models", { status: 401 });
    await prober({ readSecret: () => "wrong" }).probeAll();
    expect((await store.getModel("m1"))?.health.reason).toMatch(/HTTP 401 \(check the key in VLLM_KEY\)/);
  });

  it("probes image models with ComfyUI's /system_stats", async () => {
    await store.upsertModel({ ...textModel({ id: "img", kind: "IMAGE", contextWindow: 0, maxOutputTokens: 0 }), upstream: { baseUrls: ["http://c:1", "http://d:1"], resolveUrl: "", apiKeyEnv: "", servedModelName: "", probe: "COMFYUI" } }, 0n);
    routes.set("http://c:1/system_stats", { status: 200, body: '{"system":{},"devices":[]}' });
    routes.set("http://d:1/system_stats", { status: 200, body: "<html>" });
    await prober().probeAll();
    const m = await store.getModel("img");
    expect(m?.health.status).toBe("DEGRADED");
    expect(m?.health.replicas[1]?.detail).toBe("GET /system_stats: not JSON");
  });

  it("probes WORKER upstreams at the image worker's /readyz (its ComfyUI check), never at /system_stats", async () => {
    await store.upsertModel({ ...textModel({ id: "img", kind: "IMAGE", contextWindow: 0, maxOutputTokens: 0 }),
      upstream: { baseUrls: ["http://w1:9090", "http://w2:9090", "http://w3:9090"], resolveUrl: "", apiKeyEnv: "", servedModelName: "", probe: "WORKER" } }, 0n);
    routes.set("http://w1:9090/readyz", { status: 200, body: '{"status":"ok","failed":[]}' });
    routes.set("http://w2:9090/readyz", { status: 503, body: '{"status":"fail","failed":["comfyui"]}' });
    routes.set("http://w3:9090/readyz", { status: 503, body: "draining" });
    await prober().probeAll();
    const m = await store.getModel("img");
    expect(m?.health.status).toBe("DEGRADED");
    expect(m?.health.replicas.map((r) => [r.healthy, r.detail])).toEqual([
      [true, ""], [false, "GET /readyz: HTTP 503 (not ready: comfyui)"], [false, "GET /readyz: HTTP 503"]]);
    expect(seen.map((x) => new URL(x.url).pathname)).toEqual(["/readyz", "/readyz", "/readyz"]);
  });

  it("writes off a healthy replica only after the configured number of failures in a row", async () => {
    await store.upsertModel(textModel({ upstream: { baseUrls: ["http://a:1"], resolveUrl: "", apiKeyEnv: "", servedModelName: "", probe: "OPENAI" } }), 0n);
    healthy("http://a:1");
    const p = prober({ failuresToUnhealthy: 3 });
    await p.probeAll();
    routes.set("http://a:1/health", { status: 500 });
    await p.probeAll();
    await p.probeAll();
    expect((await store.getModel("m1"))?.health.status).toBe("AVAILABLE");
    await p.probeAll();
    expect((await store.getModel("m1"))?.health.status).toBe("OFFLINE");
    healthy("http://a:1");
    await p.probeAll();
    expect((await store.getModel("m1"))?.health.status).toBe("AVAILABLE");
  });

  it("resolves headless-service names into replicas", async () => {
    await store.upsertModel(textModel({ upstream: { baseUrls: [], resolveUrl: "http://vllm.svc:8000", apiKeyEnv: "", servedModelName: "", probe: "OPENAI" } }), 0n);
    healthy("http://10.0.0.1:8000");
    await prober({ lookup: async () => ["10.0.0.1", "10.0.0.2"] }).probeAll();
    const m = await store.getModel("m1");
    expect(m?.health).toMatchObject({ status: "DEGRADED" });
    expect(m?.health.replicas.map((r) => r.baseUrl)).toEqual(["http://10.0.0.1:8000", "http://10.0.0.2:8000"]);
  });

  it("is OFFLINE when the name resolves to nothing", async () => {
    await store.upsertModel(textModel({ upstream: { baseUrls: [], resolveUrl: "http://gone.svc:8000", apiKeyEnv: "", servedModelName: "", probe: "OPENAI" } }), 0n);
    await store.recordHealth("m1", { status: "AVAILABLE", reason: "", replicas: [] });
    await prober({ lookup: async () => [] }).probeAll();
    expect((await store.getModel("m1"))?.health).toMatchObject({ status: "OFFLINE", reason: "no replicas configured or resolved" });
  });

  it("skips disabled models and reports every model afterwards", async () => {
    await store.upsertModel(textModel(), 0n);
    await store.setModelEnabled("m1", false, "off");
    const reported: string[][] = [];
    await prober({ onProbed: (ms) => reported.push(ms.map((m) => m.id)) }).probeAll();
    expect(seen).toEqual([]);
    expect(reported).toEqual([["m1"]]);
  });

  it("never runs two rounds at once", async () => {
    await store.upsertModel(textModel(), 0n);
    healthy("http://a:1");
    healthy("http://b:1");
    const p = prober();
    await Promise.all([p.probeAll(), p.probeAll(), p.probeAll()]);
    // One round plus one queued round (the two later calls share it): 2 replicas × 2 requests × 2 rounds.
    expect(seen.length).toBe(8);
  });
});
