/** Random and truncated bodies never crash the server: every one gets a JSON answer, errors are 4xx. */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type VllmSim, startVllmSim } from "../src/index.js";
import { get, post } from "./helpers.js";

let sim: VllmSim;
beforeAll(async () => {
  sim = await startVllmSim({ models: ["m:256"], profile: "zero", outputTokens: { min: 1, max: 4 } });
});
afterAll(() => sim.close());

const ROUTES = ["/v1/chat/completions", "/v1/completions", "/tokenize", "/_sim/faults"];

/** Posts a body and checks the answer: 200 with a well-formed body, or a 4xx JSON error. */
async function check(route: string, raw: string): Promise<void> {
  const res = await post(`${sim.url}${route}`, raw);
  if (res.status === 200) {
    if (res.headers["content-type"]?.startsWith("text/event-stream")) {
      expect(res.body.endsWith("data: [DONE]\n\n")).toBe(true);
    } else {
      JSON.parse(res.body);
    }
    if (route === "/_sim/faults") await post(`${sim.url}/_sim/reset`, {}); // undo whatever faults got set
    return;
  }
  expect(res.status, `${route} ${raw.slice(0, 200)} → ${res.status} ${res.body}`).toBeGreaterThanOrEqual(400);
  expect(res.status, `${route} ${raw.slice(0, 200)} → ${res.body}`).toBeLessThan(500);
  const err = JSON.parse(res.body) as { error: { message: string; type: string; code: number } };
  expect(typeof err.error.message).toBe("string");
  expect(err.error.code).toBe(res.status);
}

// Values shaped like real requests, so the fuzzer reaches validation past JSON parsing.
const message = fc.record({
  role: fc.oneof(fc.constantFrom("system", "user", "assistant"), fc.string(), fc.integer()),
  content: fc.oneof(fc.string({ maxLength: 50 }), fc.constant(null), fc.array(fc.record({ type: fc.constantFrom("text",
    "image_url"), text: fc.oneof(fc.string(), fc.integer()) })), fc.integer()),
}, { requiredKeys: [] });
const request = fc.record({
  model: fc.oneof(fc.constant("m"), fc.string({ maxLength: 5 }), fc.integer(), fc.constant(null)),
  messages: fc.oneof(fc.array(message, { maxLength: 4 }), fc.string(), fc.constant(null)),
  prompt: fc.oneof(fc.string({ maxLength: 40 }), fc.array(fc.integer({ min: -5, max: 100000 }), { maxLength: 5 }),
    fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 })),
  max_tokens: fc.oneof(fc.integer({ min: -5, max: 400 }), fc.double(), fc.string(), fc.constant(null)),
  temperature: fc.oneof(fc.double({ min: -2, max: 3, noNaN: true }), fc.string()),
  seed: fc.oneof(fc.integer(), fc.bigInt().map(String), fc.double()),
  stop: fc.oneof(fc.string({ maxLength: 4 }), fc.array(fc.oneof(fc.string({ maxLength: 4 }), fc.integer()), { maxLength: 3 })),
  stream: fc.oneof(fc.boolean(), fc.string()),
  stream_options: fc.oneof(fc.record({ include_usage: fc.oneof(fc.boolean(), fc.integer()) }), fc.string()),
  n: fc.integer({ min: -1, max: 3 }),
  min_tokens: fc.integer({ min: -1, max: 10 }),
  errorRate: fc.double({ min: -1, max: 2 }),
  unhealthy: fc.oneof(fc.boolean(), fc.string()),
}, { requiredKeys: [] });

describe("fuzzing request bodies", () => {
  it("survives arbitrary strings", async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom(...ROUTES), fc.string({ maxLength: 200 }),
      (route, raw) => check(route, raw)), { numRuns: 150 });
  });

  it("survives arbitrary JSON values", async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom(...ROUTES), fc.json({ maxDepth: 3 }),
      (route, raw) => check(route, raw)), { numRuns: 150 });
  });

  it("survives request-shaped objects with wrong types and ranges", async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom(...ROUTES), request,
      (route, body) => check(route, JSON.stringify(body))), { numRuns: 300 });
  });

  it("answers truncated JSON with 400", async () => {
    const valid = JSON.stringify({ model: "m", messages: [{ role: "user", content: "Hello there, how are you?" }],
      max_tokens: 3, stream: true, stop: ["x"] });
    await fc.assert(fc.asyncProperty(fc.constantFrom(...ROUTES), fc.integer({ min: 0, max: valid.length - 1 }),
      async (route, cut) => {
        const res = await post(`${sim.url}${route}`, valid.slice(0, cut));
        expect(res.status).toBe(400);
        expect(JSON.parse(res.body).error.type).toBe("BadRequestError");
      }), { numRuns: 100 });
  });

  it("is still healthy and idle afterwards", async () => {
    expect((await get(`${sim.url}/health`)).status).toBe(200);
    const s = sim.stats();
    expect(s.requests.running + s.requests.waiting).toBe(0);
  });
});
