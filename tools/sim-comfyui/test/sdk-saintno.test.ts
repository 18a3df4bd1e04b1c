/**
 * Protocol fidelity judged by a published third-party client: @saintno/comfyui-sdk (ComfyApi + PromptBuilder +
 * CallWrapper) drives the SDXL and FLUX.1 schnell graphs end to end — queue, websocket progress/preview/executed,
 * history, image download.
 */
import { CallWrapper, ComfyApi, PromptBuilder } from "@saintno/comfyui-sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startComfySim, type ComfySim } from "../src/index.js";
import { decodePng, fluxGraph, sdxlGraph } from "./helpers.js";

let sim: ComfySim;
let api: ComfyApi;

beforeAll(async () => {
  sim = await startComfySim({ stepMs: 5, nodeMs: 1 });
  api = new ComfyApi(sim.url, "saintno-client");
  api.init(1, 100);
  await api.waitForReady();
});

afterAll(async () => {
  api.destroy();
  await sim.close();
});

interface ImageInfo { filename: string; subfolder: string; type: string }

async function runThroughSdk(graph: ReturnType<typeof sdxlGraph>, saveNode: string, text: string) {
  const workflow = new PromptBuilder(graph, ["positive"], ["images"])
    .setRawInputNode("positive", "6.inputs.text")
    .setRawOutputNode("images", saveNode)
    .input("positive", text);
  const progress: { value: number; max: number; node: string | null }[] = [];
  const previews: Blob[] = [];
  let promptId: string | undefined;
  // The SDK may report more than one failure (e.g. the enqueue error, then a generic one); keep the first.
  let failure: Error | undefined;
  const result = await new CallWrapper(api, workflow)
    .onPending((id) => (promptId = id))
    .onProgress((p) => progress.push({ value: p.value, max: p.max, node: p.node }))
    .onPreview((blob) => previews.push(blob))
    .onFailed((err) => (failure ??= err))
    .run();
  return { result, progress, previews, promptId, failure };
}

describe("@saintno/comfyui-sdk", () => {
  it("connects: the websocket session id and the OS type come from the simulator", async () => {
    expect(api.osType).toBe("posix");
    const stats = await api.getSystemStats();
    expect(stats.devices[0]?.type).toBe("cuda");
    expect(await api.getCheckpoints()).toContain("flux1-schnell-fp8.safetensors");
    expect((await api.getSamplerInfo()).sampler?.[0]).toContain("euler");
  });

  it("runs an SDXL graph with a LoRA: progress per step, PNG previews, executed output, history, download", async () => {
    const run = await runThroughSdk(sdxlGraph({ steps: 20, width: 1024, height: 1024, lora: "add-detail-xl.safetensors" }), "9", "an old lighthouse, oil painting");
    expect(run.failure).toBeUndefined();
    expect(run.promptId).toBeTruthy();

    // One progress event per sampler step, from the KSampler node.
    expect(run.progress.map((p) => p.value)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(new Set(run.progress.map((p) => `${p.max}/${p.node}`))).toEqual(new Set(["20/3"]));

    // The SDK strips the 8-byte binary header; what is left must be a PNG.
    expect(run.previews.length).toBe(20);
    const preview = decodePng(Buffer.from(await (run.previews[0] as Blob).arrayBuffer()));
    expect([preview.width, preview.height]).toEqual([128, 128]);

    const images = (run.result as { images: { images: ImageInfo[] } }).images.images;
    expect(images).toEqual([{ filename: "ComfyUI_00001_.png", subfolder: "", type: "output" }]);

    const history = await api.getHistory(run.promptId as string);
    expect(history?.status.status_str).toBe("success");
    expect(history?.status.completed).toBe(true);
    expect(history?.outputs["9"]?.images).toEqual(images);

    const blob = await api.getImage(images[0] as ImageInfo);
    const png = decodePng(Buffer.from(await blob.arrayBuffer()));
    expect([png.width, png.height]).toEqual([1024, 1024]);
    expect(JSON.parse(png.text.prompt as string)["10"].class_type).toBe("LoraLoader");
  });

  it("runs a FLUX.1 schnell graph: 4 steps at 1024×768, image downloaded through the SDK", async () => {
    const run = await runThroughSdk(fluxGraph({ prefix: "flux/schnell" }), "9", "a red fox in fresh snow");
    expect(run.failure).toBeUndefined();
    expect(run.progress.map((p) => p.value)).toEqual([1, 2, 3, 4]);
    expect(run.progress.every((p) => p.max === 4 && p.node === "31")).toBe(true);
    const images = (run.result as { images: { images: ImageInfo[] } }).images.images;
    expect(images).toEqual([{ filename: "schnell_00001_.png", subfolder: "flux", type: "output" }]);
    const png = decodePng(Buffer.from(await (await api.getImage(images[0] as ImageInfo)).arrayBuffer()));
    expect([png.width, png.height]).toEqual([1024, 768]);
  });

  it("reports a validation failure as a failed enqueue carrying ComfyUI's error body", async () => {
    const graph = sdxlGraph();
    graph["3"]!.inputs.sampler_name = "not-a-sampler";
    const run = await runThroughSdk(graph, "9", "x");
    expect(run.result).toBe(false);
    const cause = (run.failure as Error & { cause: { error: { type: string }; node_errors: Record<string, unknown> } }).cause;
    expect(cause.error.type).toBe("prompt_outputs_failed_validation");
    expect(Object.keys(cause.node_errors)).toEqual(["3"]);
  });

  it("reports an injected execution error through the SDK's failure callback", async () => {
    sim.setFaults({ failMarker: "[fail]" });
    try {
      const run = await runThroughSdk(sdxlGraph({ steps: 4 }), "9", "this one should [fail]");
      expect(run.result).toBe(false);
      const cause = (run.failure as Error & { cause: Record<string, unknown> }).cause;
      expect(cause).toMatchObject({ node_id: "3", node_type: "KSampler", exception_type: "RuntimeError" });
    } finally {
      sim.setFaults({});
    }
  });
});
