/**
 * Protocol fidelity judged by a second published client: @stable-canvas/comfyui-client (its websocket `enqueue`, its
 * polling `enqueue_polling`, queue and history readers), with the `ws` package as WebSocket since Node 20 has none.
 */
import { Client } from "@stable-canvas/comfyui-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { startComfySim, type ComfySim } from "../src/index.js";
import { decodePng, fluxGraph, sdxlGraph } from "./helpers.js";

let sim: ComfySim;
let client: Client;

beforeAll(async () => {
  sim = await startComfySim({ stepMs: 5, nodeMs: 1 });
  client = new Client({ api_host: `127.0.0.1:${sim.port}`, clientId: "stable-canvas-client", WebSocket });
  await client.connect({ timeout_ms: 5000 });
});

afterAll(async () => {
  client.close();
  await sim.close();
});

/** Downloads an image through the client's own HTTP helper. */
async function download(url: string): Promise<Buffer> {
  const u = new URL(url);
  const res = await client.fetchApi(`${u.pathname}${u.search}`);
  return Buffer.from(await res.arrayBuffer());
}

describe("@stable-canvas/comfyui-client", () => {
  it("enqueues a FLUX.1 schnell graph over the websocket: progress, preview buffers, the image URL, history", async () => {
    const progress: { value: number; max: number }[] = [];
    const result = await client.enqueue(fluxGraph({ width: 768, height: 1344 }), {
      progress: (p: { value: number; max: number }) => progress.push({ value: p.value, max: p.max }),
      timeout_ms: 10_000,
    });
    expect(progress).toEqual([1, 2, 3, 4].map((value) => ({ value, max: 4 })));

    const previews = result.images.filter((i) => i.type === "buff");
    expect(previews.length).toBe(4);
    const urls = result.images.filter((i) => i.type === "url").map((i) => i.data as string);
    expect(urls).toHaveLength(1);
    const png = decodePng(await download(urls[0] as string));
    expect([png.width, png.height]).toEqual([768, 1344]);

    const outputs = await client.getPromptOutputs(result.prompt_id);
    expect(outputs["9"].images[0].filename).toMatch(/^ComfyUI_\d{5}_\.png$/);
    const { History } = await client.getHistory(10);
    const item = History.find((h) => h.prompt[1] === result.prompt_id);
    expect(item?.status?.status_str).toBe("success");
  });

  it("runs an SDXL batch of two by polling only (no websocket events used)", async () => {
    const result = await client.enqueue_polling(sdxlGraph({ batch: 2, width: 832, height: 1216, steps: 8 }), { polling_ms: 20, timeout_ms: 10_000 });
    const urls = result.images.map((i) => i.data as string);
    expect(urls).toHaveLength(2);
    const sizes = await Promise.all(urls.map(async (u) => {
      const png = decodePng(await download(u));
      return [png.width, png.height];
    }));
    expect(sizes).toEqual([[832, 1216], [832, 1216]]);
  });

  it("lists a pending prompt in the queue and interrupts the running one by id", async () => {
    const slow = sdxlGraph({ steps: 400, text: "slow one" });
    // queuePrompt throws on a 400, so what it returns is the success shape.
    const first = await client.queuePrompt(0, { prompt: slow, workflow: {} }) as { prompt_id: string };
    const second = await client.queuePrompt(0, { prompt: sdxlGraph({ steps: 400, text: "slow two" }), workflow: {} }) as { prompt_id: string };
    const { Running, Pending } = await client.getQueue();
    expect(Running.map((t) => (t as unknown as unknown[])[1])).toEqual([first.prompt_id]);
    expect(Pending.map((t) => (t as unknown as unknown[])[1])).toEqual([second.prompt_id]);

    await client.deleteItem("queue", second.prompt_id);
    expect((await client.getQueue()).Pending).toEqual([]);
    await client.interrupt(first.prompt_id);
    // 400 steps × 5 ms would take 2 s; the interrupted prompt is done long before the wait gives up.
    await client.waitForPrompt(first.prompt_id, 10, 1000);
    await expect(client.getPromptOutputs(first.prompt_id)).rejects.toThrow(`Prompt ${first.prompt_id} execution failed with status: error`);
  });

  it("surfaces a 400 validation body as the client's HttpError with ComfyUI's JSON", async () => {
    const graph = sdxlGraph();
    delete graph["9"];
    await expect(client.queuePrompt(0, { prompt: graph, workflow: {} })).rejects.toMatchObject({
      name: "HttpError",
      status: 400,
      json: { error: { type: "prompt_no_outputs", message: "Prompt has no outputs" }, node_errors: {} },
    });
  });
});
