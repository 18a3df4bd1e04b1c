// Issue 22: the OpenAI-compatible API of chat-router, driven by clients the project did not write — the official
// `openai` npm SDK and the Vercel AI SDK (`ai` + `@ai-sdk/openai-compatible`) — against the real platform harness
// (billing, model-registry, Postgres, Redis, NATS, the vLLM simulator). Each call places one hold and one charge in
// the ledger; a client that disconnects mid-stream is billed for the partial reply only; errors arrive as the SDKs'
// error classes (bad key, revoked key, no credits, rate limit, unknown model, bad input).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import OpenAI from "openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { streamText } from "ai";
import pg from "pg";
import { Code, ConnectError } from "@connectrpc/connect";
import { startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { apiKeyRevocationId, connectRedis, createLogger, createRevocationList, generateApiKey, type ApiKeyLookup } from "@luna/kit";
import { testServers } from "@luna/kit/testing";
import { startPlatform, waitFor, type Platform } from "./harness.js";

let platform: Platform;
let sim: VllmSim;
let slowSim: VllmSim;
/** Answers every generation with an error (its health endpoint is fine): the model is listed but cannot reply. */
let downSim: VllmSim;
let billingDb: pg.Pool;
let baseURL: string;
/** The keys "auth" knows (the kit's API-key verifier and revocation list in front of it are the real ones). */
const keys = new Map<string, { userId: string; apiKeyId: string }>();
const lookup: ApiKeyLookup = async (key) => {
  const k = keys.get(key);
  if (!k) throw new ConnectError("invalid API key (unknown, revoked or expired)", Code.Unauthenticated);
  return k;
};
const redis = connectRedis(testServers().redisUrl, { log: createLogger({ service: "test", level: "silent" }), name: "openai-test" });
const revocations = createRevocationList({ redis });

const PRICE_IN = 10n;
const PRICE_OUT = 20n;

beforeAll(async () => {
  sim = await startVllmSim({ models: ["sim-model:8192"], outputTokens: { min: 20, max: 40 } });
  // Long, slow replies: a client can leave in the middle.
  slowSim = await startVllmSim({ models: ["sim-model:8192"], outputTokens: { min: 400, max: 400 }, timing: { decodeTokensPerSec: 100 } });
  downSim = await startVllmSim({ models: ["sim-model:8192"], faults: { errorRate: 1 } });
  platform = await startPlatform({ apiKeyLookup: lookup, limits: { chatPerMinute: 4, chatStreams: 5 } });
  await platform.addModel({ id: "m-chat", baseUrls: [sim.url], contextWindow: 8192, maxOutputTokens: 512, inputPer1k: PRICE_IN, outputPer1k: PRICE_OUT });
  await platform.addModel({ id: "m-slow", baseUrls: [slowSim.url], contextWindow: 8192, maxOutputTokens: 1024, inputPer1k: PRICE_IN, outputPer1k: PRICE_OUT });
  await platform.addModel({ id: "m-down", baseUrls: [downSim.url], contextWindow: 8192, maxOutputTokens: 512, inputPer1k: PRICE_IN, outputPer1k: PRICE_OUT });
  billingDb = new pg.Pool({ connectionString: platform.dbs.billing.url, max: 2 });
  baseURL = `http://127.0.0.1:${platform.chat.hosted.port}/v1`;
}, 60_000);

afterAll(async () => {
  await billingDb?.end();
  await platform?.stop();
  await sim?.close();
  await slowSim?.close();
  await downSim?.close();
  redis.disconnect();
});

/** A funded user with a personal API key. */
async function keyedUser(credits: bigint): Promise<{ id: string; key: string; token: string }> {
  const u = await platform.user(credits);
  const key = generateApiKey();
  keys.set(key, { userId: u.id, apiKeyId: `k-${u.id}` });
  return { id: u.id, key, token: u.token };
}

function client(apiKey: string, opts: { maxRetries?: number; fetch?: typeof fetch } = {}): OpenAI {
  return new OpenAI({ apiKey, baseURL, maxRetries: opts.maxRetries ?? 0, fetch: opts.fetch });
}

/** The ledger's view of one completion: its holds and the charges against them. */
async function ledgerOf(completionId: string) {
  const holds = (await billingDb.query<{ id: string; status: string; amount: string; charged: string }>(
    "SELECT id, status, amount::text, charged::text FROM holds WHERE reference = $1", [completionId])).rows;
  const charges = (await billingDb.query<{ amount: string; usage: { inputTokens: string | number; outputTokens: string | number } }>(
    "SELECT amount::text, usage FROM ledger_transfers WHERE kind = 'charge' AND hold_id = ANY($1::uuid[])", [holds.map((h) => h.id)])).rows
    .map((c) => ({ amount: c.amount, usage: { inputTokens: Number(c.usage.inputTokens), outputTokens: Number(c.usage.outputTokens) } }));
  return { holds, charges };
}

function cost(promptTokens: number, completionTokens: number): bigint {
  return (BigInt(promptTokens) * PRICE_IN + BigInt(completionTokens) * PRICE_OUT + 999n) / 1000n;
}

describe("the openai SDK", () => {
  it("lists the catalog's models with Luna's prices", async () => {
    const u = await keyedUser(0n);
    const ids: string[] = [];
    for await (const m of client(u.key).models.list()) ids.push(m.id);
    expect(ids).toEqual(expect.arrayContaining(["m-chat", "m-slow"]));
    const page = await client(u.key).models.list();
    const chat = page.data.find((m) => m.id === "m-chat") as unknown as { object: string; luna: Record<string, unknown> };
    expect(chat.object).toBe("model");
    expect(chat.luna).toMatchObject({ kind: "text", context_window: 8192, input_credits_per_1k_tokens: "10", output_credits_per_1k_tokens: "20" });
  });

  it("streams a reply with usage; the ledger shows one hold and one charge of exactly that usage", async () => {
    const u = await keyedUser(10_000n);
    const stream = await client(u.key).chat.completions.create({
      model: "m-chat", stream: true, stream_options: { include_usage: true }, temperature: 0.2, seed: 7,
      messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello there" }],
    });
    let text = "";
    let id = "";
    let usage: OpenAI.CompletionUsage | undefined | null;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      id = chunk.id;
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    const rec = sim.stats().recent.at(-1)!;
    expect(text.length).toBeGreaterThan(0);
    expect(finish).toBe("stop");
    expect(usage).toMatchObject({ prompt_tokens: rec.promptTokens, completion_tokens: rec.completionTokens });
    const ledger = await ledgerOf(id);
    expect(ledger.holds).toHaveLength(1);
    expect(ledger.holds[0]!.status).toBe("committed");
    expect(ledger.charges).toHaveLength(1);
    expect(BigInt(ledger.charges[0]!.amount)).toBe(cost(rec.promptTokens, rec.completionTokens));
    expect(await platform.available(u.id)).toBe(10_000n - cost(rec.promptTokens, rec.completionTokens));
    await platform.assertInvariants();
  });

  it("answers without streaming, with max_tokens, and accepts the user's access token too", async () => {
    const u = await keyedUser(10_000n);
    const r = await client(u.token).chat.completions.create({ model: "m-chat", max_tokens: 5, messages: [{ role: "user", content: "Count" }] });
    expect(r.object).toBe("chat.completion");
    expect(r.choices[0]!.finish_reason).toBe("length");
    expect(r.usage!.completion_tokens).toBe(5);
    const ledger = await ledgerOf(r.id);
    expect(ledger.holds.map((h) => h.status)).toEqual(["committed"]);
    expect(ledger.charges.map((c) => BigInt(c.amount))).toEqual([cost(r.usage!.prompt_tokens, 5)]);
  });

  it("gives AuthenticationError for a bad key and, within seconds, for a revoked one", async () => {
    const bad = await client("luna_sk_thisisnotakey").chat.completions.create({ model: "m-chat", messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((bad as InstanceType<typeof OpenAI.AuthenticationError>).status).toBe(401);

    const u = await keyedUser(10_000n);
    await client(u.key).models.list();
    // Revoked in auth: auth forgets it and writes the key's revocation entry (what Accounts.revokeApiKey does).
    const apiKeyId = keys.get(u.key)!.apiKeyId;
    keys.delete(u.key);
    await revocations.revokeUser(apiKeyRevocationId(apiKeyId), { ttlMs: 60_000 });
    const since = Date.now();
    let err: unknown;
    while (Date.now() - since < 5000) {
      err = await client(u.key).models.list().then(() => undefined, (e: unknown) => e);
      if (err) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(Date.now() - since).toBeLessThan(2500);
  });

  it("gives RateLimitError insufficient_quota (not retried) without credits, and places no hold", async () => {
    const u = await keyedUser(0n);
    let calls = 0;
    const counting: typeof fetch = (input, init) => {
      calls++;
      return fetch(input, init);
    };
    const err = await client(u.key, { maxRetries: 2, fetch: counting })
      .chat.completions.create({ model: "m-chat", messages: [{ role: "user", content: "Hi" }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect((err as InstanceType<typeof OpenAI.RateLimitError>).code).toBe("insufficient_quota");
    expect(calls).toBe(1);
    const holds = await billingDb.query("SELECT 1 FROM holds WHERE account_id = $1", [u.id]);
    expect(holds.rowCount).toBe(0);
  });

  it("gives RateLimitError with retry-after past the per-minute limit", async () => {
    const u = await keyedUser(10_000n);
    const c = client(u.key);
    for (let i = 0; i < 4; i++) await c.chat.completions.create({ model: "m-chat", max_tokens: 2, messages: [{ role: "user", content: "a" }] });
    const err = await c.chat.completions.create({ model: "m-chat", max_tokens: 2, messages: [{ role: "user", content: "a" }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const e = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(e.code).toBe("rate_limit_exceeded");
    expect(Number(e.headers?.get("retry-after"))).toBeGreaterThanOrEqual(1);
  });

  it("gives NotFoundError for an unknown model and BadRequestError naming the field for bad input", async () => {
    const u = await keyedUser(10_000n);
    const c = client(u.key);
    const nf = await c.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }).catch((e: unknown) => e);
    expect(nf).toBeInstanceOf(OpenAI.NotFoundError);
    expect((nf as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("model_not_found");
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ model: "m-chat", messages: [] }, "messages"],
      [{ model: "m-chat", messages: [{ role: "wizard", content: "x" }] }, "messages[0].role"],
      [{ model: "m-chat", messages: [{ role: "user", content: "x" }], temperature: 9 }, "temperature"],
      [{ model: "m-chat", messages: [{ role: "user", content: "x" }], n: 2 }, "n"],
      [{ model: "m-chat", messages: [{ role: "user", content: "x" }], max_tokens: -1 }, "max_tokens"],
    ];
    for (const [body, param] of cases) {
      const err = await c.chat.completions.create(body as never).catch((e: unknown) => e);
      expect(err, param).toBeInstanceOf(OpenAI.BadRequestError);
      expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe(param);
    }
    // Not JSON at all.
    const raw = await fetch(`${baseURL}/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${u.key}` }, body: "{nope" });
    expect(raw.status).toBe(400);
    expect((await raw.json() as { error: { code: string } }).error.code).toBe("invalid_json");
  });

  it("gives a 503 (InternalServerError, which the SDKs retry) when the model cannot answer, and releases the hold", async () => {
    const u = await keyedUser(10_000n);
    const err = await client(u.key).chat.completions.create({ model: "m-down", messages: [{ role: "user", content: "anyone?" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    expect((err as InstanceType<typeof OpenAI.InternalServerError>).status).toBe(503);
    expect((err as InstanceType<typeof OpenAI.InternalServerError>).code).toBe("model_unavailable");
    const holds = (await billingDb.query<{ status: string }>("SELECT status FROM holds WHERE account_id = $1", [u.id])).rows;
    expect(holds.map((h) => h.status)).toEqual(["released"]);
    expect(await platform.available(u.id)).toBe(10_000n);
  });

  it("does not break the stale-reply sweep while a reply streams (its id is no message id)", async () => {
    const u = await keyedUser(100_000n);
    const ac = new AbortController();
    const stream = await client(u.key).chat.completions.create({ model: "m-slow", stream: true, messages: [{ role: "user", content: "Tell me everything" }] },
      { signal: ac.signal });
    let swept: string | undefined;
    try {
      for await (const chunk of stream) {
        if (!chunk.choices[0]?.delta.content) continue;
        // In flight: the sweep skips this process's replies; a stateless one has no message row to skip.
        swept = await platform.chat.module.sweep().then(() => "ok", (e: unknown) => String(e));
        ac.abort();
      }
    } catch {
      // the abort
    }
    expect(swept).toBe("ok");
  });

  it("bills only the partial reply when the client disconnects mid-stream, and stops the upstream", async () => {
    const u = await keyedUser(100_000n);
    const ac = new AbortController();
    const stream = await client(u.key).chat.completions.create({ model: "m-slow", stream: true, messages: [{ role: "user", content: "Tell me everything" }] },
      { signal: ac.signal });
    let id = "";
    let chunks = 0;
    try {
      for await (const chunk of stream) {
        id = chunk.id;
        if (chunk.choices[0]?.delta.content) chunks++;
        if (chunks >= 10) ac.abort();
      }
    } catch {
      // the abort
    }
    expect(chunks).toBeGreaterThanOrEqual(10);
    await waitFor(async () => (await ledgerOf(id)).holds[0]?.status === "committed", "the partial reply's charge", 10_000);
    const ledger = await ledgerOf(id);
    expect(ledger.holds).toHaveLength(1);
    expect(ledger.charges).toHaveLength(1);
    const usage = ledger.charges[0]!.usage;
    // Far fewer than the 400 tokens the model would have produced, billed as produced; the upstream was aborted.
    expect(usage.outputTokens).toBeGreaterThanOrEqual(10);
    expect(usage.outputTokens).toBeLessThan(200);
    expect(BigInt(ledger.charges[0]!.amount)).toBe(cost(usage.inputTokens, usage.outputTokens));
    expect(BigInt(ledger.charges[0]!.amount)).toBeLessThan(BigInt(ledger.holds[0]!.amount));
    await waitFor(() => slowSim.stats().recent.at(-1)?.finishReason === "abort", "the upstream request aborted", 5000);
    await platform.assertInvariants();
  });
});

describe("the luna extension", () => {
  it("stores the exchange as a conversation on request, then continues it; without it nothing is stored", async () => {
    const u = await keyedUser(10_000n);
    const c = client(u.key);
    const before = (await conversationsOf(u.token)).length;
    await c.chat.completions.create({ model: "m-chat", max_tokens: 3, messages: [{ role: "user", content: "not kept" }] });
    expect(await conversationsOf(u.token)).toHaveLength(before);

    const first = await c.chat.completions.create({ model: "m-chat", max_tokens: 3,
      messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Keep this" }], luna: { store: true } } as never) as
      unknown as OpenAI.ChatCompletion & { luna: { conversation_id: string; message_id: string } };
    const conversationId = first.luna.conversation_id;
    expect(first.id).toBe(`chatcmpl-${first.luna.message_id}`);
    const stream = await c.chat.completions.create({ model: "m-chat", max_tokens: 3, stream: true,
      messages: [{ role: "user", content: "And this" }], luna: { conversation_id: conversationId } } as never) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    const got = await platform.chat.client(u.token).getConversation({ conversationId });
    expect(got.conversation!.systemPrompt).toBe("Be brief.");
    expect(got.messages.map((m) => m.content)).toEqual(["Keep this", first.choices[0]!.message.content, "And this", text]);

    const bad = await c.chat.completions.create({ model: "m-chat", messages: [{ role: "user", content: "x" }, { role: "assistant", content: "y" },
      { role: "user", content: "z" }], luna: { store: true } } as never).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect((bad as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("messages");
  });
});

async function conversationsOf(token: string) {
  return (await platform.chat.client(token).listConversations({})).conversations;
}

describe("the Vercel AI SDK (@ai-sdk/openai-compatible)", () => {
  it("streams text with usage", async () => {
    const u = await keyedUser(10_000n);
    const luna = createOpenAICompatible({ name: "luna", baseURL, apiKey: u.key, includeUsage: true });
    const result = streamText({ model: luna("m-chat"), prompt: "Say hello" });
    let text = "";
    for await (const part of result.textStream) text += part;
    const usage = await result.usage;
    const rec = sim.stats().recent.at(-1)!;
    expect(text.length).toBeGreaterThan(0);
    expect(usage.inputTokens).toBe(rec.promptTokens);
    expect(usage.outputTokens).toBe(rec.completionTokens);
  });

  it("surfaces an unknown model as an API call error with status 404", async () => {
    const u = await keyedUser(10_000n);
    const luna = createOpenAICompatible({ name: "luna", baseURL, apiKey: u.key });
    let error: unknown;
    const result = streamText({ model: luna("no-such-model"), prompt: "x", onError: ({ error: e }) => void (error = e), maxRetries: 0 });
    for await (const part of result.textStream) void part;
    expect((error as { statusCode?: number }).statusCode).toBe(404);
  });
});
