// The worker's ComfyUI client: parsers (fuzzed: never a crash) and every call against the ComfyUI simulator.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import fc from "fast-check";
import { startComfySim, type ComfySim } from "@luna/sim-comfyui";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ComfyClient, ComfyUnavailableError, parseHistoryEntry, pngSize, promptErrorMessage, type PromptEvent } from "./comfy-client.js";

const quiet = { warn: () => undefined, debug: () => undefined };

/** FLUX schnell as the seeded catalog renders it. */
function fluxGraph(opts: { prompt?: string; seed?: number; batch?: number; size?: number; prefix?: string; ckpt?: string } = {}) {
  const size = opts.size ?? 64;
  return {
    "1": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: opts.ckpt ?? "flux1-schnell-fp8.safetensors" } },
    "2": { class_type: "CLIPTextEncode", inputs: { text: opts.prompt ?? "a cat", clip: ["1", 1] } },
    "3": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["1", 1] } },
    "4": { class_type: "EmptySD3LatentImage", inputs: { width: size, height: size, batch_size: opts.batch ?? 1 } },
    "5": { class_type: "KSampler", inputs: { model: ["1", 0], positive: ["2", 0], negative: ["3", 0], latent_image: ["4", 0],
      seed: opts.seed ?? 1, steps: 4, cfg: 1.0, sampler_name: "euler", scheduler: "simple", denoise: 1.0 } },
    "6": { class_type: "VAEDecode", inputs: { samples: ["5", 0], vae: ["1", 2] } },
    "7": { class_type: "SaveImage", inputs: { images: ["6", 0], filename_prefix: opts.prefix ?? "luna/test" } },
  };
}

describe("parsers", () => {
  it("reads success, error and interrupted history entries", () => {
    expect(parseHistoryEntry({
      status: { status_str: "success", completed: true, messages: [] },
      outputs: { "10": { images: [{ filename: "b.png", subfolder: "", type: "output" }] }, "9": { images: [{ filename: "a.png", subfolder: "s", type: "output" },
        { filename: "p.png", subfolder: "", type: "temp" }] } },
    })).toEqual({ state: "success", images: [{ filename: "a.png", subfolder: "s", type: "output" }, { filename: "b.png", subfolder: "", type: "output" }] });
    expect(parseHistoryEntry({ status: { status_str: "error", completed: false, messages: [["execution_error",
      { node_type: "KSampler", exception_type: "RuntimeError", exception_message: "boom\n" }]] }, outputs: {} }))
      .toEqual({ state: "error", interrupted: false, message: "KSampler: RuntimeError: boom" });
    expect(parseHistoryEntry({ status: { status_str: "error", completed: false, messages: [["execution_interrupted", { node_id: "5" }]] } }))
      .toMatchObject({ state: "error", interrupted: true });
    expect(parseHistoryEntry(undefined)).toBeUndefined();
  });

  it("reads both shapes of a refused prompt", () => {
    expect(promptErrorMessage({ error: "bad graph" })).toBe("bad graph");
    expect(promptErrorMessage({ error: { type: "prompt_outputs_failed_validation", message: "Prompt outputs failed validation", details: "" },
      node_errors: { "1": { class_type: "CheckpointLoaderSimple", errors: [{ message: "Value not in list", details: "ckpt_name: 'x' not in [...]" }] } } }))
      .toBe("Prompt outputs failed validation; node 1 (CheckpointLoaderSimple): Value not in list — ckpt_name: 'x' not in [...]");
    expect(promptErrorMessage(null)).toBe("ComfyUI refused the workflow");
  });

  it("reads PNG sizes and refuses other bytes", () => {
    const ihdr = Buffer.alloc(24);
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(ihdr);
    ihdr.write("IHDR", 12, "latin1");
    ihdr.writeUInt32BE(640, 16);
    ihdr.writeUInt32BE(480, 20);
    expect(pngSize(ihdr)).toEqual({ width: 640, height: 480 });
    expect(pngSize(Buffer.from("GIF89a"))).toBeUndefined();
  });

  it("never throws on arbitrary input", () => {
    fc.assert(fc.property(fc.anything({ maxDepth: 5 }), (v) => {
      parseHistoryEntry(v);
      expect(typeof promptErrorMessage(v)).toBe("string");
    }), { numRuns: 2000 });
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
      pngSize(Buffer.from(b));
    }));
  });
});

describe("against the simulator", () => {
  let sim: ComfySim;
  let comfy: ComfyClient;

  beforeAll(async () => {
    sim = await startComfySim({ stepMs: 20 });
    comfy = new ComfyClient({ baseUrl: sim.url, clientId: "test-client", requestTimeoutMs: 5000, log: quiet, reconnectMs: 100 });
    comfy.connect();
  });

  afterAll(async () => {
    comfy.close();
    await sim.close();
  });

  it("submits under our prompt id, reports websocket events, history and the image", async () => {
    const id = crypto.randomUUID();
    const events: PromptEvent["type"][] = [];
    const off = comfy.onPrompt(id, (e) => events.push(e.type));
    await new Promise((r) => setTimeout(r, 200)); // websocket connected
    expect(await comfy.submit(id, fluxGraph({ batch: 2, seed: 7 }))).toEqual({ ok: true });
    expect(await comfy.submit(id, fluxGraph({ batch: 2, seed: 7 }))).toEqual({ ok: false, kind: "duplicate" });
    let h;
    for (let i = 0; i < 100 && !(h = await comfy.history(id)); i++) await new Promise((r) => setTimeout(r, 50));
    expect(h?.state).toBe("success");
    if (h?.state !== "success") return;
    expect(h.images).toHaveLength(2);
    const bytes = await comfy.view(h.images[0]!);
    expect(pngSize(bytes)).toEqual({ width: 64, height: 64 });
    expect(events).toContain("progress");
    expect(events).toContain("finished");
    expect(await comfy.queueState(id)).toBeUndefined();
    off();
  });

  it("reports a refused graph as invalid, with ComfyUI's reason", async () => {
    const r = await comfy.submit(crypto.randomUUID(), fluxGraph({ ckpt: "missing.safetensors" }));
    expect(r).toMatchObject({ ok: false, kind: "invalid" });
    if (!r.ok && r.kind === "invalid") expect(r.message).toContain("ckpt_name");
  });

  it("sees a prompt in the queue and cancels it", async () => {
    sim.setFaults({});
    const first = crypto.randomUUID();
    const second = crypto.randomUUID();
    await comfy.submit(first, fluxGraph({ seed: 100, size: 256 }));
    await comfy.submit(second, fluxGraph({ seed: 101, size: 256 }));
    expect(await comfy.queueState(first)).toBe("running");
    expect(await comfy.queueState(second)).toBe("pending");
    await comfy.cancel(second);
    await comfy.cancel(first);
    expect(await comfy.queueState(second)).toBeUndefined();
    let h;
    for (let i = 0; i < 100 && !(h = await comfy.history(first)); i++) await new Promise((r) => setTimeout(r, 20));
    expect(h).toMatchObject({ state: "error", interrupted: true });
  });

  it("raises ComfyUnavailableError when ComfyUI is down", async () => {
    const down = new ComfyClient({ baseUrl: "http://127.0.0.1:9", clientId: "x", requestTimeoutMs: 1000, log: quiet });
    await expect(down.ping()).rejects.toBeInstanceOf(ComfyUnavailableError);
    await expect(down.history("x")).rejects.toBeInstanceOf(ComfyUnavailableError);
  });

  it("gives up on a ComfyUI that accepts the request but never finishes its answer (deadline over the whole exchange)", async () => {
    // Headers at once, then a body that never ends.
    const stuck = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write("{");
    });
    await new Promise<void>((r) => stuck.listen(0, "127.0.0.1", r));
    const { port } = stuck.address() as AddressInfo;
    const client = new ComfyClient({ baseUrl: `http://127.0.0.1:${port}`, clientId: "x", requestTimeoutMs: 300, log: quiet });
    try {
      await expect(client.history("x")).rejects.toThrow(/ComfyUI GET \/history\/x: no complete answer within 300 ms/);
    } finally {
      client.close();
      stuck.closeAllConnections();
      await new Promise((r) => stuck.close(r));
    }
  });
});
