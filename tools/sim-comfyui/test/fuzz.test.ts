/**
 * Bad input never crashes the simulator: random JSON, truncated bodies, random bytes and mutated graphs sent to
 * POST /prompt always get a JSON answer (400 with an error object, or 200 for a graph that is still valid), and
 * nothing reaches the internal-error path.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startComfySim, type ComfySim } from "../src/index.js";
import { eventually, fluxGraph, sdxlGraph } from "./helpers.js";

let sim: ComfySim;
const logged: string[] = [];

beforeAll(async () => {
  // Small limits keep accepted mutants cheap to execute.
  sim = await startComfySim({ stepMs: 0, nodeMs: 0, previews: false, maxBatchPixels: 256 * 256, log: (l) => logged.push(l) });
});

afterAll(async () => {
  await sim.close();
  expect(logged.filter((l) => l.includes("internal error"))).toEqual([]);
});

async function post(body: string | Uint8Array<ArrayBuffer>): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${sim.url}/prompt`, { method: "POST", body, headers: { "Content-Type": "application/json" } });
  const text = await res.text();
  return { status: res.status, json: JSON.parse(text) as unknown };
}

function expectComfyAnswer(r: { status: number; json: unknown }): void {
  if (r.status === 200) {
    expect(r.json).toMatchObject({ prompt_id: expect.any(String), node_errors: expect.any(Object) });
    return;
  }
  expect(r.status).toBe(400);
  expect(r.json).toMatchObject({
    error: { type: expect.any(String), message: expect.any(String), details: expect.any(String), extra_info: expect.any(Object) },
    node_errors: expect.any(Object),
  });
}

describe("POST /prompt fuzz", () => {
  it("random JSON values as the body", async () => {
    await fc.assert(fc.asyncProperty(fc.jsonValue(), async (v) => {
      expectComfyAnswer(await post(JSON.stringify(v) ?? "null"));
    }), { numRuns: 100 });
  });

  it("random JSON values as the prompt", async () => {
    await fc.assert(fc.asyncProperty(fc.jsonValue(), async (v) => {
      const r = await post(JSON.stringify({ prompt: v, client_id: "fuzz" }));
      expect(r.status).toBe(400);
      expectComfyAnswer(r);
    }), { numRuns: 100 });
  });

  it("valid requests truncated at any point", async () => {
    const full = JSON.stringify({ prompt: sdxlGraph({ width: 64, height: 64, steps: 1 }), client_id: "fuzz", extra_data: { a: [1, 2] } });
    await fc.assert(fc.asyncProperty(fc.integer({ min: 0, max: full.length - 1 }), async (cut) => {
      const r = await post(full.slice(0, cut));
      expect(r.status).toBe(400);
      expectComfyAnswer(r);
    }), { numRuns: 100 });
  });

  it("random bytes", async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), async (bytes) => {
      expectComfyAnswer(await post(new Uint8Array(bytes)));
    }), { numRuns: 100 });
  });

  it("graphs with inputs replaced by random values, links or garbage", async () => {
    const base = { ...sdxlGraph({ width: 64, height: 64, steps: 2 }), ...Object.fromEntries(Object.entries(fluxGraph({ width: 64, height: 64 })).map(([k, v]) => [`f${k}`, v])) };
    const nodeIds = Object.keys(base);
    const anyValue = fc.oneof(
      fc.jsonValue(),
      fc.tuple(fc.constantFrom(...nodeIds, "missing", "__proto__", "constructor"), fc.integer({ min: -4, max: 4 })),
      fc.tuple(fc.jsonValue(), fc.jsonValue()),
      fc.constantFrom("", "euler", "karras", "sd_xl_base_1.0.safetensors", 0, 1, -1, 16, 65, 1e300, "12", "1e2"),
    );
    const mutation = fc.tuple(fc.constantFrom(...nodeIds, "__proto__", "new"), fc.string({ maxLength: 12 }), anyValue, fc.boolean());
    await fc.assert(fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 6 }), async (mutations) => {
      const graph = structuredClone(base) as Record<string, { class_type: string; inputs: Record<string, unknown> }>;
      for (const [nodeId, freeKey, value, useRealKey] of mutations) {
        const node = Object.hasOwn(graph, nodeId) ? graph[nodeId] : undefined;
        if (!node) {
          Object.defineProperty(graph, nodeId, { value: { class_type: freeKey, inputs: { x: value } }, enumerable: true, configurable: true, writable: true });
          continue;
        }
        const keys = Object.keys(node.inputs);
        const key = useRealKey && keys.length > 0 ? keys[freeKey.length % keys.length] as string : freeKey;
        Object.defineProperty(node.inputs, key, { value, enumerable: true, configurable: true, writable: true });
      }
      expectComfyAnswer(await post(JSON.stringify({ prompt: graph, client_id: "fuzz" })));
    }), { numRuns: 200 });
  });

  it("is still healthy afterwards, and every accepted mutant ran to success or error", async () => {
    expect((await fetch(`${sim.url}/prompt`)).status).toBe(200);
    await eventually(async () => {
      const info = await (await fetch(`${sim.url}/prompt`)).json() as { exec_info: { queue_remaining: number } };
      return info.exec_info.queue_remaining === 0;
    }, 20_000, "the accepted prompts to run");
    const stats = sim.stats();
    expect(stats.queued).toBeGreaterThan(0);
    expect(stats.succeeded + stats.failed).toBe(stats.queued);
  });
});
